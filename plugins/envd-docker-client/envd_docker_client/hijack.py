"""The one thing the Docker SDK cannot do well: a byte-exact stream to an exec's stdio.

``exec_start(socket=True)`` of the SDK reads the HTTP response head through a buffered reader
and hands back the raw socket underneath; bytes the engine sends right after the head (BuildKit's
HTTP/2 SETTINGS frame, which ``buildctl dial-stdio`` forwards at once; the first output of a
fast command) can be left behind in that buffer and lost. So the attach is written by hand:
``POST /exec/<id>/start`` with ``Connection: Upgrade``/``Upgrade: tcp`` on a socket of our own,
the head parsed byte-wise and whatever follows it kept. This is the only exec attach of envd's
Docker plugins: the docker runner's ``run_exec``, ``dial_container_stdio`` and the
docker-container builder all use it.

Without a TTY the engine multiplexes the exec's output: each frame is an 8-byte header
(stream 1 = stdout, 2 = stderr; 3 bytes padding; big-endian payload length) plus payload. Input
is not framed. :class:`ExecStream` reads the frames (:meth:`ExecStream.frames`) or, as the
byte stream the BuildKit bridge needs, stdout only (:meth:`ExecStream.recv`, stderr's tail kept
to explain a failure). ``shutdown_write`` half-closes the socket, which the engine turns into EOF
on the exec's stdin. With a TTY the bytes are raw (and the line discipline rewrites them: never
for binary protocols).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from envd_core.errors import BuilderError, EnvdError

__all__ = ["Endpoint", "ExecStream", "endpoint_for_host", "open_socket", "request_json",
           "start_exec"]

_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
_STDERR_KEEP = 4096
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Endpoint:
    """A Docker Engine address plus the TLS material to reach it."""

    host: str
    #: Speak TLS to the engine (tcp:// only).
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    #: Verify the engine's certificate (False: encrypt only, as ``SkipTLSVerify``).
    verify: bool = True
    #: Where the endpoint came from, for messages (``DOCKER_HOST``, ``docker context `x```).
    source: str = "DOCKER_HOST"


def endpoint_for_host(host: str) -> Endpoint:
    """The endpoint for a ``unix://`` or ``tcp://`` address, with the TLS settings of the
    environment (``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``) for tcp, as the SDK reads them."""
    if not host.startswith(("unix://", "tcp://")):
        scheme = host.split("://", 1)[0]
        raise BuilderError(f"exec over a `{scheme}://` Docker host is not supported (`{host}`)",
                           hint="use a unix:// or tcp:// DOCKER_HOST")
    if host.startswith("unix://"):
        return Endpoint(host=host)
    verify = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    cert_path = os.environ.get("DOCKER_CERT_PATH")
    if not verify and not cert_path:
        return Endpoint(host=host)
    directory = cert_path or os.path.join(
        os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"))
    files = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    present = {name: path if os.path.exists(path) else None for name, path in files.items()}
    return Endpoint(host=host, tls=True, ca=present["ca"], cert=present["cert"],
                    key=present["key"], verify=verify)


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
    """An exec's stdin (``sendall``) and its output: frames, or stdout as one byte stream."""

    def __init__(self, sock: socket.socket, rest: bytes = b"", *, tty: bool = False) -> None:
        self._sock = sock
        self.tty = tty
        self._buf = bytearray(rest)
        self._kind = 0  # stream of the frame being read; 0 = expecting a header
        self._left = 0  # payload bytes of that frame not yet consumed
        self._stderr = bytearray()
        self._closed = False

    @property
    def sock(self) -> socket.socket:
        """The socket underneath (for ``select`` and half-close)."""
        return self._sock

    @property
    def stderr(self) -> str:
        """The last few KiB the exec wrote to stderr (for error messages)."""
        return self._stderr.decode("utf-8", "replace")

    def _fill(self, n: int) -> bool:
        try:
            chunk = self._sock.recv(max(n, CHUNK))
        except OSError:
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(stream, bytes)`` (1 stdout, 2 stderr) until the exec closes its output.

        With a TTY everything is stdout, in the pieces it arrives in."""
        while True:
            if self.tty:
                if not self._buf and not self._fill(CHUNK):
                    return
                data = bytes(self._buf)
                self._buf.clear()
                yield STDOUT, data
                continue
            while len(self._buf) < _HEADER.size:
                if not self._fill(CHUNK):
                    return
            kind, size = _HEADER.unpack_from(self._buf)
            del self._buf[:_HEADER.size]
            while len(self._buf) < size:
                if not self._fill(size - len(self._buf)):
                    data = bytes(self._buf)  # cut short: hand over what came
                    self._buf.clear()
                    yield kind, data
                    return
            data = bytes(self._buf[:size])
            del self._buf[:size]
            yield kind, data

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes of the exec's stdout; ``b""`` at the end of the stream."""
        while True:
            if self.tty:
                if not self._buf and not self._fill(n):
                    return b""
                data = bytes(self._buf[:n])
                del self._buf[:n]
                return data
            if self._left and self._buf:
                take = min(self._left, len(self._buf), n if self._kind == STDOUT else 1 << 30)
                data = bytes(self._buf[:take])
                del self._buf[:take]
                self._left -= take
                if self._kind == STDOUT:
                    return data
                if self._kind == STDERR:
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
        # shutdown first: close() alone does not wake a thread blocked in recv() on Linux
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def request_json(endpoint: Endpoint, method: str, path: str, body: object = None, *,
                 timeout: float = 30.0) -> tuple[int, object]:
    """One plain Engine API request on a socket of our own: ``(status, decoded JSON body)``.

    Every build on a docker-container builder asks the engine two things (is the container
    running? make an exec): doing those without the SDK spares each ``envd build`` the import
    of docker/requests/urllib3 (~0.3 s here). Paths are unversioned: the engine serves its own
    current API version.
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


def start_exec(endpoint: Endpoint, exec_id: str, *, api_version: str, timeout: float,
               tty: bool = False, error: type[EnvdError] = BuilderError) -> ExecStream:
    """Start exec ``exec_id`` attached, and return its stdio as an :class:`ExecStream`.

    ``api_version`` ``""`` means an unversioned path (the engine's current version). Failures
    are one-line ``error``\\ s."""
    body = json.dumps({"Detach": False, "Tty": tty}).encode()
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
        raise error(
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
        raise error(f"Docker Engine at `{endpoint.host}` dropped the exec attach: {exc}") \
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
        raise error(
            f"Docker Engine refused to attach to the exec: {detail or status_line or 'no answer'}"
        )
    sock.settimeout(None)
    return ExecStream(sock, rest, tty=tty)
