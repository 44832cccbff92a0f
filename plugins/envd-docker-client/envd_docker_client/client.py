"""Opening a Docker client, and turning Docker's failures into one-line envd errors.

Everything here is built on the ``docker`` SDK (Docker SDK for Python), imported inside the
functions so that importing this module (which every Docker plugin does when ``envd context ls``
loads it) costs nothing.
"""

from __future__ import annotations

import contextlib
import os
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
    never uses TLS). The API version is negotiated with the daemon (one ``/version`` call), so
    both Docker 20.10 (API 1.41) and current engines work. Failing to reach the daemon raises
    ``error`` with one line.
    """
    import docker
    import docker.errors
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
        return docker.DockerClient(version="auto", timeout=int(timeout), **kwargs)


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
