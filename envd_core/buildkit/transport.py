"""How bytes reach buildkitd: unix sockets, TCP (+TLS/mTLS) and byte bridges.

A *bridge* is for endpoints grpcio cannot dial itself: dockerd's ``POST /grpc`` h2c upgrade and
``buildctl dial-stdio`` run inside a container. We listen on a unix socket in a private temp dir,
point a grpc channel at it, and for every connection grpcio opens we call ``dial()`` for a fresh
upstream byte stream and splice the two both ways. ``Connection.close()`` tears all of it down.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from envd_core.buildkit.errors import BuildkitConnectionError, connection_error
from envd_core.errors import BuilderError, ValidationError

if TYPE_CHECKING:
    import grpc

MAX_MESSAGE = 16 << 20  # buildkitd's limit in each direction
DEFAULT_TIMEOUT = 5.0
TIMEOUT_ENV = "BUILDKIT_CONNECTING_TIMEOUT"

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Never route a daemon connection through $http_proxy.
    ("grpc.enable_http_proxy", 0),
    # Retry a daemon that is still starting quickly instead of grpc's 1 s+ backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def load_grpc() -> Any:
    """Import grpc with its C-core logging quiet unless the user asked for it: handshake
    failures would otherwise print several ``E...`` lines besides our one-line error."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    return grpc


def parse_go_duration(text: str) -> float:
    """Parse a Go duration (``5s``, ``500ms``, ``1m30s``, ``0``) into seconds.

    Raises ``ValidationError`` naming the value when it is not a Go duration.
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValidationError(
            f"invalid duration `{text}`: use a Go duration such as `5s`, `500ms` or `1m`"
        )
    return sign * total


def connect_timeout(timeout: float | None = None) -> float:
    """The connect timeout: ``timeout`` if given, else ``$BUILDKIT_CONNECTING_TIMEOUT``, else 5 s."""
    if timeout is not None:
        return timeout
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT
    try:
        value = parse_go_duration(raw)
    except ValidationError:
        raise ValidationError(
            f"invalid {TIMEOUT_ENV} `{raw}`: use a Go duration such as `5s`, `500ms` or `1m`"
        ) from None
    if value <= 0:
        raise ValidationError(f"invalid {TIMEOUT_ENV} `{raw}`: it must be positive, e.g. `5s`")
    return value


@dataclass(frozen=True)
class TLSConfig:
    """TLS material for a TCP daemon; ``ca`` alone = server-auth TLS, plus cert/key = mTLS."""

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files and build grpc channel credentials (clear error if one is missing)."""
        import grpc

        if (self.cert is None) != (self.key is None):
            raise ValidationError(
                "TLS client certificate and key go together: give both `cert` and `key` or neither"
            )

        def read(p: str | os.PathLike[str] | None, what: str) -> bytes | None:
            if p is None:
                return None
            try:
                with open(p, "rb") as f:
                    return f.read()
            except OSError as e:
                raise ValidationError(
                    f"cannot read TLS {what} `{os.fspath(p)}`: {e.strerror}; fix the path"
                ) from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "CA"),
            private_key=read(self.key, "key"),
            certificate_chain=read(self.cert, "certificate"),
        )


@dataclass
class Connection:
    """An open gRPC channel to a BuildKit daemon plus whatever keeps it alive (bridges).

    ``close()`` is idempotent and also runs on ``with`` exit.
    """

    channel: grpc.Channel
    target: str
    tls: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Close the channel, stop bridge threads/processes and remove temp sockets."""
        if self._closed:
            return
        self._closed = True
        try:
            self.channel.close()
        finally:
            for closer in reversed(self._closers):
                closer()

    def __enter__(self) -> Connection:  # noqa: PYI034 - final in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_ready(conn: Connection, timeout: float) -> None:
    """Block until ListWorkers answers, or raise the classified error once ``timeout`` expires."""
    import grpc

    from envd_core.buildkit._pb import control_pb2

    call = conn.channel.unary_unary(
        "/moby.buildkit.v1.Control/ListWorkers",
        request_serializer=control_pb2.ListWorkersRequest.SerializeToString,
        response_deserializer=control_pb2.ListWorkersResponse.FromString,
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    last: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            call(control_pb2.ListWorkersRequest(), timeout=remaining)
            return
        except grpc.RpcError as e:
            last = e
            code = e.code()
            # Only "not up yet" is worth retrying; a TLS or protocol mismatch will not heal.
            if code != grpc.StatusCode.UNAVAILABLE:
                break
            err = connection_error(e, target=conn.target, tls=conn.tls)
            if (
                err.kind in ("tls", "not-buildkit", "dns")
                or "socket closed" in (e.details() or "").lower()
            ):
                break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
    if last is None:
        last = TimeoutError("timed out")
    raise connection_error(last, target=conn.target, tls=conn.tls)


def _open(
    channel: grpc.Channel,
    target: str,
    *,
    tls: bool,
    timeout: float | None,
    closers: list[Callable[[], None]] | None = None,
    wait: bool = True,
) -> Connection:
    conn = Connection(channel=channel, target=target, tls=tls, _closers=list(closers or []))
    if wait:
        try:
            wait_ready(conn, connect_timeout(timeout))
        except BaseException:
            conn.close()
            raise
    return conn


def connect_unix(
    path: str | os.PathLike[str], *, timeout: float | None = None, wait: bool = True
) -> Connection:
    """Connect to buildkitd's unix socket and wait until it answers."""
    grpc = load_grpc()

    p = os.fspath(path)
    p = p.removeprefix("unix://")
    channel = grpc.insecure_channel(f"unix:{p}", options=_CHANNEL_OPTIONS)
    return _open(channel, f"unix://{p}", tls=False, timeout=timeout, wait=wait)


def connect_tcp(
    host: str,
    port: int,
    *,
    tls: TLSConfig | None = None,
    timeout: float | None = None,
    wait: bool = True,
) -> Connection:
    """Connect to buildkitd over TCP (plain, TLS or mTLS) and wait until it answers."""
    grpc = load_grpc()

    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        channel = grpc.insecure_channel(addr, options=_CHANNEL_OPTIONS)
    else:
        opts = list(_CHANNEL_OPTIONS)
        if tls.server_name:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(addr, tls.credentials(), options=opts)
    return _open(channel, f"tcp://{addr}", tls=tls is not None, timeout=timeout, wait=wait)


# ----------------------------------------------------------------------------- byte bridges


class ByteStream(Protocol):
    """What ``dial()`` returns: a connected, blocking byte stream."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


def _half_close(stream: Any) -> None:
    """Signal end-of-input to ``stream`` without closing its read side."""
    try:
        if hasattr(stream, "shutdown_write"):
            stream.shutdown_write()
        elif isinstance(stream, socket.socket):
            stream.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _force_close(stream: Any) -> None:
    try:
        if isinstance(stream, socket.socket):
            try:
                stream.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        stream.close()
    except OSError:
        pass


class _Bridge:
    """A private unix listener whose every accepted connection is spliced to ``dial()``."""

    def __init__(self, dial: Callable[[], ByteStream], target: str) -> None:
        self._dial = dial
        self._target = target
        self._dir = tempfile.mkdtemp(prefix="envd-bk-")
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "bridge.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._lock = threading.Lock()
        self._streams: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self.last_error: BaseException | None = None
        t = threading.Thread(target=self._accept_loop, name="envd-bk-bridge-accept", daemon=True)
        t.start()
        self._threads.append(t)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name="envd-bk-bridge", daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                local, _ = self._listener.accept()
            except OSError:
                return  # listener closed by stop()
            if self._stopped:
                local.close()
                return
            self._spawn(self._serve, local)

    def _serve(self, local: socket.socket) -> None:
        with self._lock:
            self._streams.add(local)
        try:
            remote = self._dial()
        except BaseException as e:  # noqa: BLE001 - kept for the error; grpc sees the close
            self.last_error = e
            with self._lock:
                self._streams.discard(local)
            _force_close(local)
            return
        with self._lock:
            if self._stopped:
                _force_close(remote)
                _force_close(local)
                return
            self._streams.add(remote)
        done = threading.Event()
        self._spawn(self._pump, remote, local, done)  # daemon -> grpc
        self._pump(local, remote, None)  # grpc -> daemon
        # An upstream that ignores our EOF (a stuck process) must not pin this thread forever.
        done.wait(5)
        with self._lock:
            self._streams.discard(local)
            self._streams.discard(remote)
        _force_close(remote)
        _force_close(local)

    @staticmethod
    def _pump(src: Any, dst: Any, done: threading.Event | None) -> None:
        """Copy ``src`` to ``dst`` until EOF; ``done`` marks the daemon -> grpc direction."""
        try:
            while True:
                try:
                    data = src.recv(256 * 1024)
                except OSError:
                    break
                if not data:
                    break
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            if done is None:
                _half_close(dst)  # grpc finished sending: pass the EOF upstream
            else:
                # Upstream ended (or died): grpc must see EOF now, and our reader of the grpc
                # side must wake up, so shut the local socket both ways.
                try:
                    dst.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                done.set()

    def stop(self) -> None:
        """Close the listener and every live stream, join threads, remove the temp dir."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            streams = list(self._streams)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for s in streams:
            _force_close(s)
        deadline = time.monotonic() + 5
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        shutil.rmtree(self._dir, ignore_errors=True)


def connect_bridge(
    dial: Callable[[], ByteStream], *, target: str, timeout: float | None = None, wait: bool = True
) -> Connection:
    """Open a channel whose every connection is a fresh ``dial()`` stream spliced through a
    private unix socket. ``target`` is only used in messages."""
    grpc = load_grpc()

    bridge = _Bridge(dial, target)
    channel = grpc.insecure_channel(f"unix:{bridge.path}", options=_CHANNEL_OPTIONS)
    conn = Connection(channel=channel, target=target, _closers=[bridge.stop])
    if wait:
        try:
            wait_ready(conn, connect_timeout(timeout))
        except BuildkitConnectionError as e:
            conn.close()
            if bridge.last_error is not None:
                raise _dial_failure(bridge.last_error, target) from None
            raise e from None
        except BaseException:
            conn.close()
            raise
    return conn


def _dial_failure(exc: BaseException, target: str) -> BuilderError:
    if isinstance(exc, BuilderError):
        return exc
    return connection_error(exc, target=target)


class _PrefixedSocket:
    """A socket whose first reads return bytes already consumed while parsing a header."""

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
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _docker_socket(docker_host: str, timeout: float) -> socket.socket:
    if docker_host.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(docker_host[len("unix://") :])
    elif docker_host.startswith("tcp://"):
        hostport = docker_host[len("tcp://") :].rstrip("/")
        host, _, port = hostport.rpartition(":")
        s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    else:
        raise ValidationError(
            f"unsupported DOCKER_HOST `{docker_host}`: use `unix:///path` or `tcp://host:port`"
        )
    return s


def dial_docker_upgrade(
    docker_host: str = "unix:///var/run/docker.sock",
    path: str = "/grpc",
    *,
    headers: dict[str, list[str]] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Callable[[], ByteStream]:
    """A ``dial()`` that opens ``docker_host`` and upgrades ``POST <path>`` to h2c.

    dockerd answers ``101 Switching Protocols``; afterwards the socket carries raw HTTP/2
    (for ``/grpc`` we are the HTTP/2 client). ``headers`` adds extra header lines (``/session``).
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
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 65536:
                    break
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
                kind="not-buildkit",
            )
        s.settimeout(None)
        return _PrefixedSocket(s, rest)

    return dial


class _ProcessStream:
    """A spawned process's stdin/stdout as a byte stream (``buildctl dial-stdio``)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,
        )
        self._closed = False

    def recv(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        return os.read(self.proc.stdout.fileno(), n)

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError) as e:
            raise OSError(str(e)) from None

    def shutdown_write(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.shutdown_write()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def dial_process(argv: list[str]) -> Callable[[], ByteStream]:
    """A ``dial()`` that spawns ``argv`` per connection and talks over its stdin/stdout,
    e.g. ``["docker", "exec", "-i", C, "buildctl", "dial-stdio"]``."""

    def dial() -> ByteStream:
        try:
            return _ProcessStream(list(argv))
        except OSError as e:
            raise BuildkitConnectionError(
                f"cannot start `{argv[0]}` to reach BuildKit: {e.strerror}; is it installed?",
                kind="unavailable",
            ) from None

    return dial
