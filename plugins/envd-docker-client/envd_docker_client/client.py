"""Opening a Docker client, and turning Docker's failures into one-line envd errors.

Everything here is built on the ``docker`` SDK (Docker SDK for Python), imported inside the
functions so that importing this module (which every Docker plugin does when ``envd context ls``
loads it) costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from envd_core.errors import EnvdError, RunnerError

if TYPE_CHECKING:
    import docker

__all__ = [
    "DEFAULT_HOST",
    "DockerHostError",
    "docker_errors",
    "docker_host",
    "explain",
    "open_client",
    "server_version",
]

DEFAULT_HOST = "unix:///var/run/docker.sock"
#: Seconds a single Engine API call may take before it counts as "daemon not answering".
DEFAULT_TIMEOUT = 600.0


class DockerHostError(EnvdError):
    """The Docker host address itself is unusable (not unix:// or tcp://)."""

    exit_code = 2


def docker_host(override: str | None = None) -> str:
    """The daemon address: ``override`` (an option or runner address), else DOCKER_HOST."""
    return override or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def open_client(host: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                error: type[EnvdError] = RunnerError) -> docker.DockerClient:
    """A ``docker.DockerClient`` for ``host`` (``None``: DOCKER_HOST and friends).

    ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` are honoured as
    ``docker.from_env`` does; an explicit ``host`` replaces only the address (a ``unix://`` host
    never uses TLS). The API version is negotiated with the daemon (one ``GET /version``, whose
    answer :func:`server_version` keeps, so asking the engine's version later costs nothing), so
    both Docker 20.10 (API 1.41) and current engines work. Failing to reach the daemon raises
    ``error`` with one line. With ``ENVD_TIMINGS`` set, every request is counted
    (``docker requests``) for the benchmarks.
    """
    import docker
    import docker.errors
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from docker.utils import kwargs_from_env

    address = docker_host(host)
    if not address.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
        raise DockerHostError(
            f"unsupported Docker host `{address}`",
            hint="use unix:///path/docker.sock or tcp://host:port",
        )
    kwargs: dict[str, Any] = {}
    if address.startswith("tcp://"):  # TLS settings matter only there
        try:
            kwargs = dict(kwargs_from_env())
        except docker.errors.DockerException as exc:  # e.g. DOCKER_CERT_PATH without the files
            detail = _first_line(str(exc)).split(". ")[0]
            raise error(
                f"cannot use the Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH="
                f"`{os.environ.get('DOCKER_CERT_PATH', '')}`): {detail}",
                hint="put ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH, or unset it",
            ) from None
    kwargs["base_url"] = address
    with docker_errors(address, "connect", error=error):
        # an explicit version: the SDK's own "auto" negotiation would send its GET /version
        # and drop the answer; ours keeps it (the engine version is what status reports)
        # the SDK annotates timeout as int; requests takes float seconds (a 0.5 s probe)
        client = docker.DockerClient(version=DEFAULT_DOCKER_API_VERSION,
                                     timeout=timeout,  # type: ignore[arg-type]
                                     **kwargs)
        from envd_core import timings

        if timings.enabled():
            client.api.hooks["response"].append(_count_request)
        info: dict[str, Any] = client.api.version(api_version=False)
        if "ApiVersion" not in info:
            raise docker.errors.DockerException(
                "invalid answer to GET /version: no ApiVersion")
        client.api._version = str(info["ApiVersion"])  # type: ignore[attr-defined]
        _versions[client.api] = info
    return client


#: The ``GET /version`` answer of each client :func:`open_client` made, by its ``APIClient``.
_versions: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def server_version(client: docker.DockerClient) -> dict[str, Any] | None:
    """The daemon's ``GET /version`` answer that :func:`open_client` negotiated with."""
    return _versions.get(client.api)


def _count_request(response: Any, *args: Any, **kwargs: Any) -> None:
    from envd_core import timings

    timings.count("docker requests")


def explain(exc: BaseException, host: str, what: str) -> tuple[str, str | None]:
    """(message, hint) for a failure of ``what`` against the daemon at ``host``."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, docker.errors.APIError):
        detail = _first_line(str(exc.explanation or "") or str(exc))
        return f"Docker daemon at `{host}` refused to {what}: {detail}", None
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return (f"the Docker daemon at `{host}` did not answer in time ({what})",
                "check that dockerd is healthy, or retry")
    if isinstance(exc, (requests.exceptions.RequestException, docker.errors.DockerException,
                        OSError)):
        text = _root_cause(exc)
        return (f"cannot reach the Docker daemon at `{host}`: {text}",
                "start dockerd or set DOCKER_HOST")
    return f"Docker daemon at `{host}` failed to {what}: {exc}", None


@contextlib.contextmanager
def docker_errors(host: str, what: str, *, error: type[EnvdError] = RunnerError) -> Iterator[None]:
    """Turn Docker SDK and connection errors raised inside the block into ``error``.

    ``docker.errors.NotFound`` is re-raised untouched, so callers can map it to their own
    "not found" error first.
    """
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.NotFound:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        message, hint = explain(exc, host, what)
        raise error(message, hint=hint) from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _root_cause(exc: BaseException) -> str:
    """The innermost OS error's text (``Connection refused``), else the first line of ``exc``.

    requests and urllib3 wrap the socket error several levels deep, in arguments or causes.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        nested = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return _first_line(str(exc)) or type(exc).__name__
