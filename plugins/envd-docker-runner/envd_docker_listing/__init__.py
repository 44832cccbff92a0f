"""Listing environments straight from the Docker Engine API: one ``GET /containers/json``.

``envd envs ls`` is a quick command: upstream's Go binary answers in ~36 ms. Importing the
docker SDK alone costs 170-220 ms here (requests, urllib3, charset_normalizer, http.cookiejar;
``python -X importtime``, ``import docker``), several times upstream's whole command, so the
listing reads the Engine API with the standard library (:mod:`envd_core.httplite`) instead:
the one thing the SDK cannot do is start in time. Everything else in this runner stays on the
SDK. This is the runner's only listing: :meth:`DockerRunner.list_environments` calls
:func:`containers` too, and ``envd envs ls`` (full CLI and fast path) calls :func:`list_light`.

One request, not one list plus an inspect per container: the list endpoint carries every field
``envs ls`` shows (name, image, state, labels, published ports, id). Two differences from an
inspect, both upstream's too (its ``envs ls`` reads the same endpoint): ``Image`` is what the
daemon shows in ``docker ps`` (the image id when the tag moved since), and ``Created`` has
whole seconds.

The daemon is the runner address, else ``DOCKER_HOST``, else the local socket; on ``tcp://``
the TLS settings follow the docker SDK's ``kwargs_from_env`` (``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH``, default ``~/.docker``). Other transports (``ssh://``, ``npipe://``)
raise :class:`Unsupported`: the fast path then declines, and the full runner lists through the
SDK's transport, with the same decoding (:func:`listed`).

Only the standard library and light core modules are imported here: the fast path of
``envd envs ls`` imports this module and nothing else of the plugin. It is a package of its own
in the ``envd-docker-runner`` distribution, beside ``envd_docker_runner``, because importing a
submodule of that package would run its ``__init__``, which imports pluggy for its hook.
"""

from __future__ import annotations

import os

from envd_core.errors import RunnerError
from envd_core.jsonread import loads
from envd_core.listing import ListedEnvironment, ListedPort

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from typing import Any

#: envd_docker_client.client.DEFAULT_HOST (that module imports typing and contextlib).
DEFAULT_HOST = "unix:///var/run/docker.sock"
#: envd_docker_runner.mapping.LABEL_NAME: every container envd creates carries it.
LABEL_NAME = "ai.tensorchord.envd.name"
#: mapping.LABEL_SERVICE_PREFIX: ``ai.tensorchord.envd.service.<service>=<port>/<proto>``.
LABEL_SERVICE_PREFIX = "ai.tensorchord.envd.service."
#: mapping.SSH_PORT: where envd's SSH server listens inside an environment.
SSH_PORT = 2222
#: ``all=1&filters={"label":["ai.tensorchord.envd.name"]}``, percent-encoded once here.
QUERY = "all=1&filters=%7B%22label%22%3A%5B%22ai.tensorchord.envd.name%22%5D%7D"
#: Seconds to connect and for the answer (the SDK client's default is longer: it also pulls).
TIMEOUT = 60.0
_WHAT = "list containers"


class Unsupported(Exception):
    """The daemon's transport is not one this module speaks (``ssh://``, ``npipe://``)."""


def docker_host(address: str | None) -> str:
    """The daemon: ``address``, else ``DOCKER_HOST``, else the local socket (as
    ``envd_docker_client.client.docker_host``)."""
    return address or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def list_light(address: str | None, options: Mapping[str, str] | None = None, *,
               context: str | None = None) -> list[ListedEnvironment]:
    """The runner's light lister (``DockerRunner.lister``): every envd environment, by name."""
    host = docker_host(address)
    return sorted((listed(summary) for summary in containers(host)), key=lambda e: e.name)


def containers(host: str) -> list[dict[str, Any]]:
    """``GET /containers/json`` of the envd containers (every state) on the daemon ``host``."""
    from envd_core import httplite

    sock = _connect(host)
    try:
        answer = httplite.request(sock, "GET", f"/containers/json?{QUERY}", host="docker",
                                  headers={"User-Agent": "envd-python",
                                           "Accept": "application/json"})
    except TimeoutError:
        raise RunnerError(f"the Docker daemon at `{host}` did not answer in time ({_WHAT})",
                          hint="check that dockerd is healthy, or retry") from None
    except OSError as exc:
        raise _unreachable(host, exc) from None
    if answer.status >= 400:
        raise RunnerError(f"Docker daemon at `{host}` refused to {_WHAT}: "
                          f"{_message(answer.body) or answer.status}")
    try:
        data = loads(answer.body.decode("utf-8"))
    except ValueError:
        data = None
    if not isinstance(data, list):
        raise RunnerError(f"`{host}` is not a Docker daemon: {_WHAT} answered no JSON list",
                          hint="start dockerd or set DOCKER_HOST")
    return data


def listed(summary: Mapping[str, Any]) -> ListedEnvironment:
    """A container of ``GET /containers/json`` as a listed environment."""
    labels = {str(k): str(v) for k, v in (summary.get("Labels") or {}).items()}
    services = {value: key[len(LABEL_SERVICE_PREFIX):]
                for key, value in labels.items() if key.startswith(LABEL_SERVICE_PREFIX)}
    published = []
    for i, port in enumerate(summary.get("Ports") or ()):
        host_port = port.get("PublicPort")
        private = port.get("PrivatePort")
        if not isinstance(host_port, int) or not isinstance(private, int) or not host_port:
            continue  # exposed, not published
        host_ip = port.get("IP") or "0.0.0.0"
        if host_ip == "::":
            continue  # the IPv6 twin of a 0.0.0.0 binding: one entry per port is enough
        proto = port.get("Type") or "tcp"
        key = f"{private}/{proto}"
        published.append((key, i, ListedPort(private, host_port, host_ip, proto,
                                             services.get(key))))
    # the order of an inspect's NetworkSettings.Ports: by "port/proto", then as bound
    ports = tuple(p for _, _, p in sorted(published, key=lambda item: item[:2]))
    ssh = next(((p.host_ip, p.host_port) for p in ports
                if p.service == "ssh" or (p.container_port == SSH_PORT and p.protocol == "tcp")),
               None)
    names = [str(n) for n in summary.get("Names") or ()]
    # a linked container also shows as /other/alias: its own name has a single slash
    name = next((n for n in names if n.count("/") == 1), names[0] if names else "")
    created = summary.get("Created")
    return ListedEnvironment(
        name.lstrip("/"),
        str(summary.get("Image", "")),
        str(summary.get("State") or ""),
        id=str(summary.get("Id", "")),
        created=float(created) if isinstance(created, (int, float)) and created > 0 else None,
        ports=ports,
        labels=labels,
        ssh=ssh,
    )


def _connect(host: str) -> Any:
    from envd_core import httplite

    try:
        if host.startswith("unix://"):
            return httplite.connect_unix(host[len("unix://"):], TIMEOUT)
        if host.startswith("tcp://"):
            where = host[len("tcp://"):].rstrip("/")
            name, _, port = where.rpartition(":")
            if not name or not port.isdigit():
                raise RunnerError(f"Docker host `{host}` names no port",
                                  hint="use tcp://host:port")
            return httplite.connect_tcp(name.strip("[]"), int(port), TIMEOUT, _tls_context())
    except TimeoutError:
        raise RunnerError(f"the Docker daemon at `{host}` did not answer in time ({_WHAT})",
                          hint="check that dockerd is healthy, or retry") from None
    except OSError as exc:
        raise _unreachable(host, exc) from None
    raise Unsupported(host)


def _tls_context() -> ssl.SSLContext | None:
    """TLS for a ``tcp://`` daemon, as the docker SDK's ``kwargs_from_env`` decides it."""
    verify_env = os.environ.get("DOCKER_TLS_VERIFY")
    verify = verify_env is not None and verify_env != ""
    cert_path = os.environ.get("DOCKER_CERT_PATH") or None
    if not cert_path and not verify:
        return None
    import ssl

    directory = cert_path or os.path.join(os.path.expanduser("~"), ".docker")
    ca, cert, key = (os.path.join(directory, f"{n}.pem") for n in ("ca", "cert", "key"))
    if verify:
        if not os.path.isfile(ca):
            raise Unsupported("no ca.pem")  # the SDK's own error text: the full path says it
        context = ssl.create_default_context(cafile=ca)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        raise Unsupported("no client certificate")  # the SDK refuses it in its own words
    context.load_cert_chain(cert, key)
    return context


def _unreachable(host: str, exc: OSError) -> RunnerError:
    text = exc.strerror or str(exc) or type(exc).__name__
    return RunnerError(f"cannot reach the Docker daemon at `{host}`: {text}",
                       hint="start dockerd or set DOCKER_HOST")


def _message(body: bytes) -> str:
    """The daemon's ``{"message": …}``, on one line."""
    try:
        data = loads(body.decode("utf-8"))
    except ValueError:
        return body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else ""
    text = data.get("message") if isinstance(data, dict) else None
    return " ".join(str(text or "").split())
