"""The envd-server runner's one listing: ``GET /api/v1/users/<login>/environments``.

``envd envs ls`` calls :func:`list_light` (the runner's declared lister) on the full CLI and on
its fast path; :meth:`EnvdServerRunner.list_environments` and ``inspect`` decode the server's
environments with :func:`listed` too. The address, TLS settings, token store and HTTP client are
this package's (:mod:`envd_server_client`), the same the runner uses for every other call.

This package is separate from ``envd_server_runner`` so that the fast path can import it
without running that package's ``__init__`` (which imports pluggy for its hook); it imports
only the standard library and light core modules.
"""

from __future__ import annotations

from envd_core.errors import RunnerError
from envd_core.listing import ListedEnvironment, ListedPort

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from envd_server_client.address import ServerAddress

#: The port of the server's SSH gateway (ContainerSSH), as upstream's client assumes.
SSH_GATEWAY_PORT = 2222
#: The server's pod phases as environment statuses (anything else: ``unknown``).
PHASES = {"running": "running", "pending": "created", "succeeded": "exited",
          "failed": "exited"}


def ssh_port(options: Mapping[str, str]) -> int:
    """The SSH gateway's port: the ``ssh-port`` option, else upstream's 2222."""
    value = (options.get("ssh-port") or "").strip()
    return int(value) if value else SSH_GATEWAY_PORT


def list_light(address: str | None, options: Mapping[str, str] | None = None, *,
               context: str | None = None) -> list[ListedEnvironment]:
    """The runner's light lister (``EnvdServerRunner.lister``): the logged-in user's
    environments, by name.

    The login is found as the runner the CLI builds finds it (by the server's address: the
    full CLI makes its runner without a context); ``context`` is the contract's, unused here.
    """
    from envd_server_client.address import parse_address
    from envd_server_client.tokens import TokenStore

    opts = dict(options or {})
    server = parse_address(address)
    credential = TokenStore().find(None, server.display)
    return environments(server, opts, credential.login_name, credential.token)


def environments(server: ServerAddress, options: Mapping[str, str], login: str,
                 token: str) -> list[ListedEnvironment]:
    """Every environment of user ``login`` on ``server``, sorted by name."""
    from envd_server_client.address import quote, tls_settings
    from envd_server_client.client import ServerClient

    client = ServerClient(server, tls_settings(server, options), token=token)
    data = client.request("GET", f"/users/{quote(login)}/environments")[1]
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise RunnerError(f"`{server.display}` is not an envd-server: "
                          "the environment list has no `items`")
    port = ssh_port(options)
    return sorted((listed(item, server, port) for item in items), key=lambda e: e.name)


def listed(data: Any, server: ServerAddress, gateway_port: int) -> ListedEnvironment:
    """One environment of the server's JSON as a listed environment."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise RunnerError(f"`{server.display}` is not an envd-server: "
                          "an environment came back without a name")
    spec = data.get("spec") or {}
    status = data.get("status") or {}
    created_at = data.get("created_at")
    labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items()}
    # other ports reach the user's machine as SSH local forwards on the same port number
    ports = tuple(
        ListedPort(container_port=int(p["port"]), host_port=int(p["port"]),
                   service=str(p.get("name") or "") or None)
        for p in spec.get("ports") or []
        if isinstance(p, dict) and isinstance(p.get("port"), int)
        and 0 < p["port"] < 65536 and p["port"] != SSH_GATEWAY_PORT
    )
    return ListedEnvironment(
        data["name"],
        str(spec.get("image") or ""),
        PHASES.get(str(status.get("phase") or "").lower(), "unknown"),
        # computed when asked for: envs ls's table shows no id (see ListedEnvironment)
        id=lambda: environment_id(data["name"], created_at),
        created=(float(created_at)
                 if isinstance(created_at, (int, float)) and created_at > 0 else None),
        ports=ports,
        labels=labels,
        ssh=(server.host, gateway_port),
    )


def environment_id(name: str, created_at: Any) -> str:
    """A stable id for one incarnation of an environment.

    The API exposes no uid; name and creation time tell two incarnations apart. Hashed to hex
    so that listings which shorten ids to 12 characters, as docker's do, still tell them apart.
    The interpreter's own SHA-256 module when it has one: ``hashlib`` loads OpenSSL, which
    costs more than the rest of a listing.
    """
    import sys

    data = f"{name}@{created_at or 0}".encode()
    try:  # named by version: a failed import would search every sys.path entry first
        found = __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256")
    except ImportError:  # an interpreter built without its own SHA-2
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return str(found.sha256(data).hexdigest())
