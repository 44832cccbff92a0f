"""Byte bridges: give grpcio a unix socket whose connections are spliced to any byte stream.

Used for endpoints grpcio cannot dial itself: any ``dial()`` returning a :class:`ByteStream`
(plugins bring theirs, e.g. dockerd's ``POST /grpc`` h2c upgrade in ``envd-docker-client``) and
:func:`dial_process`, a local command's stdin/stdout. Each connection grpcio opens to the private
socket gets a fresh ``dial()`` stream; two threads copy bytes both ways.
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

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import ErrorKind

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
    e.g. ``["buildctl", "dial-stdio"]`` wrapped in whatever runs it where buildkitd is."""

    def dial() -> ByteStream:
        try:
            return _ProcessStream(list(argv))
        except OSError as e:
            raise BuildkitConnectionError(
                f"cannot start `{argv[0]}` to reach BuildKit: {e.strerror}; is it installed?",
                kind=ErrorKind.UNAVAILABLE,
            ) from None

    return dial


#: The bridge itself, for a process that serves bridged connections to other processes
#: (envd-kube-pod's forwarding keeper): ``ByteBridge(dial, target)``, its ``path``, ``stop()``.
ByteBridge = _Bridge
