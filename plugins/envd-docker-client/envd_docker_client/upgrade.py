"""dockerd's ``POST /grpc`` (and ``/session``) upgrade to h2c: the one piece written by hand.

The ``docker`` SDK has no call for these endpoints: they answer ``101 Switching Protocols`` and
then carry raw HTTP/2 in which *we* are the client (``/grpc``, dockerd's embedded BuildKit) or the
server (``/session``). The SDK's hijack support (``socket=True``) serves attach and exec, and
reads the answer through ``http.client``, whose buffered reader may already hold the first
HTTP/2 bytes that arrive together with the 101. So the request is written and the status line
parsed here, and any bytes that came after the header are handed back first. Only ``unix://``
and plain ``tcp://`` daemons are supported.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from envd_core.buildkit.bridge import DEFAULT_DIAL_TIMEOUT, ByteStream
from envd_core.buildkit.errors import BuildkitConnectionError, connection_error
from envd_core.errors import ErrorKind
from envd_docker_client.client import DockerHostError

__all__ = ["dial_docker_upgrade"]

_HEADER_LIMIT = 65536


class _PrefixedSocket:
    """A socket whose first reads return bytes already consumed while parsing the header."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix

    def recv(self, n: int) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return self._sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _docker_socket(docker_host: str, timeout: float) -> socket.socket:
    """The plain socket under the upgrade: this module checks the address and words its
    errors; connecting is the exec attach's :func:`~envd_docker_client.hijack.open_socket`."""
    from envd_docker_client.hijack import Endpoint, open_socket

    if docker_host.startswith("unix://"):
        return open_socket(Endpoint(host=docker_host), timeout)
    if docker_host.startswith("tcp://"):
        port = docker_host[len("tcp://"):].rstrip("/").rpartition(":")[2]
        if not port.isdigit():
            raise DockerHostError(f"invalid Docker host `{docker_host}`: use tcp://host:port")
        return open_socket(Endpoint(host=docker_host), timeout)
    raise DockerHostError(
        f"unsupported Docker host `{docker_host}` for the BuildKit upgrade",
        hint="use unix:///path/docker.sock or tcp://host:port",
    )


def dial_docker_upgrade(
    docker_host: str = "unix:///var/run/docker.sock",
    path: str = "/grpc",
    *,
    headers: dict[str, list[str]] | None = None,
    timeout: float = DEFAULT_DIAL_TIMEOUT,
) -> Callable[[], ByteStream]:
    """A ``dial()`` that opens ``docker_host`` and upgrades ``POST <path>`` to h2c.

    dockerd answers ``101 Switching Protocols``; afterwards the socket carries raw HTTP/2
    (for ``/grpc`` we are the HTTP/2 client). ``headers`` adds extra header lines (``/session``).
    Failures raise a one-line ``BuildkitConnectionError`` with its kind.
    """

    def dial() -> ByteStream:
        try:
            s = _docker_socket(docker_host, timeout)
        except OSError as e:
            raise connection_error(e, target=docker_host) from None
        lines = [f"POST {path} HTTP/1.1", "Host: docker", "Connection: Upgrade", "Upgrade: h2c"]
        for k, values in (headers or {}).items():
            lines.extend(f"{k}: {v}" for v in values)
        try:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) <= _HEADER_LIMIT:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError as e:
            s.close()
            raise connection_error(e, target=docker_host) from None
        head, sep, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        if not sep or " 101 " not in f"{status} ":
            s.close()
            raise BuildkitConnectionError(
                f"dockerd at `{docker_host}` refused the BuildKit upgrade on `{path}` "
                f"(`{status or 'no answer'}`); is it a Docker Engine with BuildKit (>= 18.09)?",
                kind=ErrorKind.NOT_BUILDKIT,
            )
        s.settimeout(None)
        return _PrefixedSocket(s, rest)

    return dial
