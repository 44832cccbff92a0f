"""Byte bridges: give grpcio a unix socket whose connections are spliced to any byte stream.

Used for endpoints grpcio cannot dial itself: dockerd's ``POST /grpc`` h2c upgrade and
``buildctl dial-stdio`` run inside a container (``docker exec -i``). Each connection grpcio
opens to the private socket gets a fresh ``dial()`` stream; two threads copy bytes both ways.
``transport.connect_bridge`` wraps this into a ``Connection``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from envd_core.buildkit.errors import BuildkitConnectionError, connection_error
from envd_core.errors import ErrorKind, ValidationError

DEFAULT_DIAL_TIMEOUT = 5.0


class ByteStream(Protocol):
    """What ``dial()`` returns: a connected, blocking byte stream."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


def _half_close(stream: ByteStream) -> None:
    """Signal end-of-input to ``stream`` without closing its read side."""
    try:
        if hasattr(stream, "shutdown_write"):
            stream.shutdown_write()
        elif isinstance(stream, socket.socket):
            stream.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _force_close(stream: ByteStream) -> None:
    try:
        if isinstance(stream, socket.socket):
            with contextlib.suppress(OSError):
                stream.shutdown(socket.SHUT_RDWR)
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
        self._streams: set[ByteStream] = set()
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
    def _pump(src: ByteStream, dst: ByteStream, done: threading.Event | None) -> None:
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
                if isinstance(dst, socket.socket):  # always, in this direction
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_RDWR)
                done.set()

    def stop(self) -> None:
        """Close the listener and every live stream, join threads, remove the temp dir."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            streams = list(self._streams)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for s in streams:
            _force_close(s)
        deadline = time.monotonic() + 5
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        shutil.rmtree(self._dir, ignore_errors=True)


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
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
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
    timeout: float = DEFAULT_DIAL_TIMEOUT,
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
                kind=ErrorKind.NOT_BUILDKIT,
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
                kind=ErrorKind.UNAVAILABLE,
            ) from None

    return dial
