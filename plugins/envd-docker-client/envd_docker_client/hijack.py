"""The one thing the Docker SDK cannot do well: a byte-exact stream to an exec's stdio.

``exec_start(socket=True)`` of the SDK reads the HTTP response head through a buffered reader
and hands back the raw socket underneath; bytes the engine sends right after the head (here:
BuildKit's HTTP/2 SETTINGS frame, which ``buildctl dial-stdio`` forwards at once) can be left
behind in that buffer and lost. So the attach is written by hand: ``POST /exec/<id>/start``
with ``Connection: Upgrade``/``Upgrade: tcp`` on a socket of our own, the head parsed byte-wise
and whatever follows it kept.

Without a TTY the engine multiplexes the exec's output: each frame is an 8-byte header
(stream 1 = stdout, 2 = stderr; 3 bytes padding; big-endian payload length) plus payload. Input
is not framed. :class:`ExecStream` strips the frames: ``recv`` returns stdout bytes only, and
stderr is kept (its tail) to explain a failure. ``shutdown_write`` half-closes the socket,
which the engine turns into EOF on the exec's stdin, so ``dial-stdio`` ends with the gRPC
connection. (A TTY is no option: the line discipline would rewrite binary HTTP/2.)
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct

from envd_core.errors import BuilderError
from envd_docker_container.endpoint import Endpoint

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_STDERR_KEEP = 4096


def open_socket(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A connected socket to the engine (TLS-wrapped for a TLS endpoint)."""
    host = endpoint.host
    if host.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(host[len("unix://"):])
        except OSError:
            sock.close()
            raise
        return sock
    hostport = host[len("tcp://"):].rstrip("/")
    name, _, port = hostport.rpartition(":")
    name = name.strip("[]")
    raw = socket.create_connection((name, int(port or 2376)), timeout=timeout)
    if not endpoint.tls:
        return raw
    context = ssl.create_default_context(cafile=endpoint.ca)
    if not endpoint.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if endpoint.cert and endpoint.key:
        context.load_cert_chain(endpoint.cert, endpoint.key)
    return context.wrap_socket(raw, server_hostname=name)


class ExecStream:
    """An exec's stdin (``sendall``) and demultiplexed stdout (``recv``) as one byte stream."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self._sock = sock
        self._buf = bytearray(rest)
        self._kind = 0  # stream of the frame being read; 0 = expecting a header
        self._left = 0  # payload bytes of that frame not yet consumed
        self._stderr = bytearray()
        self._closed = False

    @property
    def stderr(self) -> str:
        """The last few KiB the exec wrote to stderr (for error messages)."""
        return self._stderr.decode("utf-8", "replace")

    def _fill(self, n: int) -> bool:
        try:
            chunk = self._sock.recv(max(n, 65536))
        except OSError:
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes of the exec's stdout; ``b""`` at the end of the stream."""
        while True:
            if self._left and self._buf:
                take = min(self._left, len(self._buf), n if self._kind == _STDOUT else 1 << 30)
                data = bytes(self._buf[:take])
                del self._buf[:take]
                self._left -= take
                if self._kind == _STDOUT:
                    return data
                if self._kind == _STDERR:
                    self._stderr += data
                    del self._stderr[:-_STDERR_KEEP]
                continue
            if not self._left and len(self._buf) >= _HEADER.size:
                self._kind, self._left = _HEADER.unpack_from(self._buf)
                del self._buf[:_HEADER.size]
                continue
            if not self._fill(n):
                return b""

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def shutdown_write(self) -> None:
        """EOF on the exec's stdin (the engine forwards the half-close)."""
        try:
            if isinstance(self._sock, ssl.SSLSocket):
                # TLS has no half-close: unwrap would end the session. Leave it open.
                return
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def request_json(endpoint: Endpoint, method: str, path: str, body: object = None, *,
                 timeout: float = 30.0) -> tuple[int, object]:
    """One plain Engine API request on a socket of our own: ``(status, decoded JSON body)``.

    Every build asks the engine two things (is the container running? make an exec): doing
    those without the SDK spares each ``envd build`` the import of docker/requests/urllib3
    (~0.3 s here). Paths are unversioned: the engine serves its own current API version.
    """
    import http.client

    data = json.dumps(body).encode() if body is not None else None
    conn = http.client.HTTPConnection("docker", timeout=timeout)
    try:
        conn.sock = open_socket(endpoint, timeout)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise BuilderError(
            f"cannot reach the Docker Engine at `{endpoint.host}` ({endpoint.source}): {exc}",
            hint="is dockerd running, and may you use its socket?",
        ) from None
    finally:
        conn.close()
    try:
        decoded: object = json.loads(raw) if raw.strip() else None
    except ValueError:
        decoded = raw.decode("utf-8", "replace").strip()
    return response.status, decoded


def start_exec(endpoint: Endpoint, exec_id: str, *, api_version: str,
               timeout: float) -> ExecStream:
    """Start exec ``exec_id`` attached, and return its stdio as an :class:`ExecStream`.

    ``api_version`` ``""`` means an unversioned path (the engine's current version)."""
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    head = (
        f"POST {f'/v{api_version}' if api_version else ''}/exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n\r\n"
    ).encode()
    try:
        sock = open_socket(endpoint, timeout)
    except (OSError, ssl.SSLError) as exc:
        raise BuilderError(
            f"cannot reach the Docker Engine at `{endpoint.host}` ({endpoint.source}): {exc}"
        ) from None
    try:
        sock.sendall(head + body)
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        sock.close()
        raise BuilderError(f"Docker Engine at `{endpoint.host}` dropped the exec attach: {exc}") \
            from None
    status_head, sep, rest = buf.partition(b"\r\n\r\n")
    status_line = status_head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if not sep or code not in (101, 200):
        sock.close()
        detail = rest.decode("utf-8", "replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail[detail.index("{"):]).get("message", detail)
        raise BuilderError(
            f"Docker Engine refused to attach to the BuildKit exec: "
            f"{detail or status_line or 'no answer'}"
        )
    sock.settimeout(None)
    return ExecStream(sock, rest)
