"""Exec in a container over a hijacked socket: streamed output, streamed input, exit code.

The SDK starts the exec and hands over the raw socket (``exec_start(socket=True)``); reading it
is ours: without a TTY dockerd multiplexes stdout and stderr into 8-byte-header frames, with a TTY
the bytes are raw. :class:`ExecStream` also serves as a ``ByteStream`` for the BuildKit bridge
(``buildctl dial-stdio`` in a container), which needs the bytes both ways with no TTY mangling.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from envd_core.errors import EnvdError, RunnerError
from envd_docker_client.client import docker_errors, docker_host, open_client

if TYPE_CHECKING:
    import docker

__all__ = ["ExecStream", "dial_container_stdio", "run_exec"]

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
CHUNK = 64 * 1024


def _raw_socket(handle: Any) -> socket.socket:
    # exec_start(socket=True) returns socket.SocketIO on unix sockets; it cannot half-close,
    # which is how the command learns its input ended, so use the socket underneath.
    sock = getattr(handle, "_sock", handle)
    assert isinstance(sock, socket.socket), type(sock)
    return sock


class ExecStream:
    """The hijacked connection of one exec: frames in, bytes out, half-close for end of input."""

    def __init__(self, handle: Any, *, tty: bool) -> None:
        self._handle = handle  # keeps the SDK's response (and TLS state) alive
        self.sock = _raw_socket(handle)
        self.tty = tty
        self._pending = b""

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    def frames(self) -> Any:
        """Yield ``(stream_id, bytes)`` until the command closes its output (1 out, 2 err)."""
        while True:
            if self.tty:
                chunk = self.sock.recv(CHUNK)
                if not chunk:
                    return
                yield _STDOUT, chunk
                continue
            header = self._read_exact(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            stream_id, size = _HEADER.unpack(header)
            payload = self._read_exact(size)
            yield stream_id, payload
            if len(payload) < size:
                return

    # -- ByteStream (the BuildKit bridge): stdout only, stderr dropped --------------------------
    def recv(self, n: int) -> bytes:
        while not self._pending:
            for stream_id, data in self.frames():
                if stream_id == _STDOUT and data:
                    self._pending = data
                    break
            else:
                return b""
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # shutdown first: close() alone does not wake a thread blocked in recv() on Linux
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        try:
            self.sock.close()
        finally:
            close = getattr(self._handle, "close", None)
            if close is not None:
                close()


def _pump_stdin(source: IO[bytes], stream: ExecStream) -> None:
    try:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            stream.sendall(chunk)
    except OSError:
        pass  # the command exited and closed its input: nothing more to send
    finally:
        stream.shutdown_write()


def run_exec(
    client: docker.DockerClient,
    host: str,
    container: str,
    argv: Sequence[str],
    *,
    tty: bool = False,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    error: type[EnvdError] = RunnerError,
) -> int:
    """Run ``argv`` in ``container`` with streams as given; return its exit code.

    Output is written as it arrives; ``stdin`` is sent from a thread while output is read, so a
    command that reads and writes a lot (``cat``) never deadlocks.
    """
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    api = client.api
    with docker_errors(host, f"run `{' '.join(argv)}` in `{container}`", error=error):
        exec_id = api.exec_create(
            container, list(argv), stdin=stdin is not None, stdout=True, stderr=True, tty=tty,
            environment=dict(env or {}), workdir=workdir, user=user or "",
        )["Id"]
        stream = ExecStream(api.exec_start(exec_id, tty=tty, socket=True), tty=tty)
        pump = None
        if stdin is not None:
            pump = threading.Thread(target=_pump_stdin, args=(stdin, stream), daemon=True,
                                    name="envd-docker-exec-stdin")
            pump.start()
        try:
            for stream_id, data in stream.frames():
                target = err if stream_id == _STDERR else out
                target.write(data)
                target.flush()
        finally:
            stream.close()
            if pump is not None:
                # the command has ended; a pump still blocked reading an interactive stdin
                # (a terminal) must not hold the caller, and it is a daemon thread
                pump.join(timeout=0.1)
        code = api.exec_inspect(exec_id).get("ExitCode")
    return int(code) if code is not None else -1


def dial_container_stdio(
    container: str,
    argv: Sequence[str] = ("buildctl", "dial-stdio"),
    *,
    host: str | None = None,
    error: type[EnvdError] = RunnerError,
) -> Callable[[], ExecStream]:
    """A ``dial()`` for the BuildKit bridge: each call execs ``argv`` in ``container``.

    This is what ``docker-container://NAME`` means to buildctl (``docker exec -i NAME buildctl
    dial-stdio``), done through the Engine API instead of the docker CLI.
    """
    address = docker_host(host)

    def dial() -> ExecStream:
        import docker.errors

        client = open_client(address, error=error)
        try:
            with docker_errors(address, f"exec `{' '.join(argv)}` in `{container}`", error=error):
                exec_id = client.api.exec_create(container, list(argv), stdin=True, stdout=True,
                                                 stderr=True, tty=False)["Id"]
                return ExecStream(client.api.exec_start(exec_id, socket=True), tty=False)
        except docker.errors.NotFound:
            raise error(f"container `{container}` not found in the Docker daemon at `{address}`",
                        hint="check the name with `docker ps`") from None

    return dial
