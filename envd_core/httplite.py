"""One HTTP/1.1 request over a socket, on the standard library's ``_socket`` (and ``ssl``) alone.

Hand-written because of start-up time, not function: ``envd envs ls`` is a quick command that
must start about as fast as upstream's Go binary, and the clients that could do this import far
more than the whole command may cost. Measured on the project's VM (``python -X importtime``,
minimum of 10 runs): ``http.client`` pulls in the ``email`` package, ~10 ms; the ``docker`` SDK
(requests, urllib3, charset_normalizer, http.cookiejar) ~170-220 ms. The runner plugins use those
clients for everything else; only their light listers (:attr:`envd_core.runner.Runner.lister`)
go through here.

What it does: one request per connection (``Connection: close``), a JSON or empty body, a
response read to its end with ``Content-Length``, ``chunked`` transfer coding or until EOF.
Plain connections use the interpreter's ``_socket`` directly: ``socket.py`` imports
``selectors`` (with ``math`` and ``select``) and ``array``, a few milliseconds a listing does not
need; TLS goes through ``socket`` and ``ssl`` as usual.
What it does not (callers that need it use ``http.client``): keep-alive, redirects, ``1xx``
other than ``100 Continue``, compressed content codings (it never asks for them).
"""

from __future__ import annotations

import _socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable, Mapping

#: Largest response accepted (a listing is kilobytes; this only bounds a broken peer).
MAX_BODY = 64 * 1024 * 1024


class ProtocolError(OSError):
    """The peer did not answer with HTTP/1.x (or closed the connection before an answer)."""


class Response:
    """Status, headers (lower-case names) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def connect_unix(path: str, timeout: float) -> _socket.socket:
    """A stream socket connected to the unix socket ``path``."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_tcp(host: str, port: int, timeout: float,
                tls: ssl.SSLContext | None = None) -> _socket.socket | socket.socket:
    """A TCP connection to ``host:port``, wrapped in TLS (with SNI) when ``tls`` is given.

    Each address ``host`` resolves to is tried in turn, as ``socket.create_connection`` does.
    """
    if tls is not None:
        import socket

        plain = socket.create_connection((host, port), timeout=timeout)
        try:
            return tls.wrap_socket(plain, server_hostname=host)
        except BaseException:
            plain.close()
            raise
    error: OSError | None = None
    # an ASCII name as bytes: a str goes through the idna codec (encodings.idna, stringprep)
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _name, address in _socket.getaddrinfo(
            name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"`{host}` resolves to no address")


def request(sock: _socket.socket | socket.socket, method: str, target: str, *, host: str,
            headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Response:
    """Send one request on ``sock`` and read the whole response; the socket is closed after.

    ``target`` is the path and query, already encoded. Socket and TLS errors propagate as
    they are (``OSError`` and its subclasses); a peer that does not speak HTTP raises
    :class:`ProtocolError`.
    """
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return _read_response(_Reader(sock), method)
    finally:
        sock.close()


class _Reader:
    """``readline`` and ``read`` over a socket's ``recv`` (``_socket`` has no ``makefile``)."""

    __slots__ = ("_buffer", "_eof", "_sock")

    def __init__(self, sock: _socket.socket | socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._sock.recv(65536)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def readline(self, limit: int) -> bytes:
        """Up to and including the next ``\n`` (at most ``limit`` bytes; ``b""`` at EOF)."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit or not self._fill():
                return self._take(min(limit, len(self._buffer)))

    def read(self, size: int) -> bytes:
        """``size`` bytes, fewer only at EOF."""
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(min(size, len(self._buffer)))

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _read_response(stream: _Reader, method: str) -> Response:
    readline, read = stream.readline, stream.read
    while True:
        status_line = readline(65537)
        if not status_line:
            raise ProtocolError("the connection closed (EOF) without an HTTP answer")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {status_line[:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if status != 100:
            break
    if method == "HEAD" or status in (204, 304):
        return Response(status, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, headers, _read_chunked(readline, read))
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        size = int(length)
        if size > MAX_BODY:
            raise ProtocolError(f"an answer of {size} bytes is too large")
        body = read(size)
        if len(body) < size:
            raise ProtocolError("the connection closed in the middle of the answer")
        return Response(status, headers, body)
    return Response(status, headers, read(MAX_BODY))


def _read_chunked(readline: Callable[[int], bytes], read: Callable[[int], bytes]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = readline(1024)
        if not size_line:
            raise ProtocolError("the connection closed in the middle of the answer")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"a bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ProtocolError("the answer is too large")
        data = read(size)
        if len(data) < size:
            raise ProtocolError("the connection closed in the middle of the answer")
        chunks.append(data)
        readline(1024)  # the CRLF after the chunk
