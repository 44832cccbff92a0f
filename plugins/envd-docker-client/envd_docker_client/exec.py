"""Exec in a container: streamed output, streamed input, exit code; and ``dial-stdio``.

The SDK creates the exec and reads its exit code; attaching to it is
:func:`envd_docker_client.hijack.start_exec`, the byte-exact attach all of envd's Docker plugins
share (the SDK's ``exec_start(socket=True)`` can lose the bytes that arrive together with the
101 response). :class:`ExecStream` serves as a ``ByteStream`` for the BuildKit bridge too
(``buildctl dial-stdio`` in a container), which needs the bytes both ways with no TTY mangling.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

from envd_core.errors import EnvdError, RunnerError
from envd_docker_client.client import docker_errors, docker_host, open_client
from envd_docker_client.hijack import STDERR, ExecStream, endpoint_for_host, start_exec

if TYPE_CHECKING:
    import docker

__all__ = ["ExecStream", "dial_container_stdio", "run_exec"]

#: Seconds to connect to the engine and get the attach answered (not the command's run time).
ATTACH_TIMEOUT = 60.0
CHUNK = 64 * 1024


def _attach(client: docker.DockerClient, host: str, exec_id: str, *, tty: bool,
            error: type[EnvdError]) -> ExecStream:
    try:
        endpoint = endpoint_for_host(host)
    except EnvdError as exc:
        raise error(exc.message, hint=exc.hint) from None
    version = str(getattr(client.api, "api_version", "") or "")
    return start_exec(endpoint, exec_id, api_version=version, timeout=ATTACH_TIMEOUT, tty=tty,
                      error=error)


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
        stream = _attach(client, host, exec_id, tty=tty, error=error)
        pump = None
        if stdin is not None:
            pump = threading.Thread(target=_pump_stdin, args=(stdin, stream), daemon=True,
                                    name="envd-docker-exec-stdin")
            pump.start()
        try:
            for stream_id, data in stream.frames():
                target = err if stream_id == STDERR else out
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
            return _attach(client, address, exec_id, tty=False, error=error)
        except docker.errors.NotFound:
            raise error(f"container `{container}` not found in the Docker daemon at `{address}`",
                        hint="check the name with `docker ps`") from None

    return dial
