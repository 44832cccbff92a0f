"""A ``rootlesskit buildkitd`` process owned by the invoking unprivileged user.

Where things live (``NAME`` is the builder address, default ``buildkitd``):

socket
    ``$XDG_RUNTIME_DIR/buildkit/NAME.sock`` (upstream's daemonless script uses
    ``buildkitd.sock`` there); without ``XDG_RUNTIME_DIR``, ``/run/user/UID`` if it exists,
    else a private ``envd-runtime-UID`` directory under the temp dir.
pid file and rootlesskit state
    next to the socket: ``NAME.pid``, ``NAME.rootlesskit/``.
BuildKit state (the cache)
    ``$XDG_DATA_HOME/envd/rootless/NAME`` (default ``~/.local/share/…``).
log
    ``$XDG_STATE_HOME/envd/rootless/NAME.log`` (default ``~/.local/state/…``).

The next envd command finds the daemon through the pid file (checked against
``/proc/PID/cmdline``, so a recycled pid is never mistaken for it) and the socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from envd_core.errors import BuilderError, ErrorKind
from envd_rootless.report import Reporter

READY_DEFAULT = 30.0


@dataclass(frozen=True)
class Paths:
    """Every file of one rootless daemon."""

    runtime: str
    socket: str
    pidfile: str
    rootlesskit_state: str
    otel: str
    data: str
    log: str

    @classmethod
    def for_name(cls, name: str, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        uid = os.getuid()
        runtime = env.get("XDG_RUNTIME_DIR") or ""
        if not runtime:
            candidate = f"/run/user/{uid}"
            runtime = candidate if os.path.isdir(candidate) else os.path.join(
                tempfile.gettempdir(), f"envd-runtime-{uid}")
        home = os.path.expanduser("~")
        data_home = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
        state_home = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
        bk = os.path.join(runtime, "buildkit")
        return cls(
            runtime=runtime,
            socket=os.path.join(bk, f"{name}.sock"),
            pidfile=os.path.join(bk, f"{name}.pid"),
            rootlesskit_state=os.path.join(bk, f"{name}.rootlesskit"),
            otel=os.path.join(bk, f"{name}.otel.sock"),
            data=os.path.join(data_home, "envd", "rootless", name),
            log=os.path.join(state_home, "envd", "rootless", f"{name}.log"),
        )


def refuse_root() -> None:
    """Rootless BuildKit as root makes no sense (and rootlesskit refuses): say what to do."""
    if os.geteuid() == 0:
        raise BuilderError(
            "the `rootless` builder runs BuildKit as your own unprivileged user, and envd is "
            "running as root",
            kind=ErrorKind.UNSUPPORTED,
            hint="run envd as a normal user (with /etc/subuid and /etc/subgid ranges), or use "
                 "the `docker-container` or `unix` builder as root",
        )


def running_pid(paths: Paths) -> int | None:
    """The daemon's pid if its pid file names a live rootlesskit, else ``None``."""
    try:
        with open(paths.pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return None
    return pid if b"rootlesskit" in cmdline and paths.socket.encode() in cmdline else None


def _write_pidfile(path: str, pid: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{pid}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _tool(path_option: str | None, name: str, package: str) -> str:
    found = path_option or shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        raise BuilderError(
            f"`{path_option or name}` is not installed or not executable: the rootless builder "
            f"needs it",
            hint=f"install {package}, or point --builder-opt {name}=/path at it",
        )
    return found


def argv(paths: Paths, *, rootlesskit: str, buildkitd: str, net: str,
         config: str | None, flags: Sequence[str]) -> list[str]:
    """The command line that starts the daemon."""
    kit = [rootlesskit, f"--net={net}", "--copy-up=/etc", "--copy-up=/run",
           f"--state-dir={paths.rootlesskit_state}"]
    if net != "host":
        kit.append("--disable-host-loopback")
    daemon = [buildkitd, "--addr", f"unix://{paths.socket}", "--root", paths.data,
              "--otel-socket-path", paths.otel, "--oci-worker=true", "--containerd-worker=false"]
    if config:
        daemon += ["--config", config]
    return [*kit, *daemon, *flags]


def _last_log_line(paths: Paths) -> str:
    try:
        with open(paths.log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(paths.log) - 4096))
            lines = [ln for ln in handle.read().decode("utf-8", "replace").splitlines()
                     if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def start(paths: Paths, command: list[str], *, report: Reporter, timeout: float) -> int:
    """Start the daemon detached, wait until it answers; one line and no leftovers on failure."""
    from envd_core.buildkit.transport import connect_unix

    for directory in (paths.runtime, os.path.dirname(paths.socket), paths.data,
                      os.path.dirname(paths.log)):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    shutil.rmtree(paths.rootlesskit_state, ignore_errors=True)
    if os.path.exists(paths.socket):
        os.unlink(paths.socket)
    env = dict(os.environ, XDG_RUNTIME_DIR=paths.runtime)
    report(f"starting rootless BuildKit (log: {paths.log})")
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _write_pidfile(paths.pidfile, proc.pid)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise BuilderError(
                    f"rootless BuildKit exited while starting (status {proc.returncode}): "
                    f"{_last_log_line(paths) or 'no log output'}",
                    hint=f"see {paths.log}",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BuilderError(
                    f"timeout {timeout:g}s: rootless BuildKit did not answer on "
                    f"`{paths.socket}` ({_last_log_line(paths) or 'no log output'})",
                    hint=f"see {paths.log}; raise BUILDKIT_CONNECTING_TIMEOUT on a slow host",
                )
            if os.path.exists(paths.socket):
                try:
                    connect_unix(paths.socket, timeout=min(remaining, 2.0)).close()
                    break
                except BuilderError:
                    pass
            time.sleep(0.1)
    except BaseException:
        _terminate(proc.pid)
        _cleanup(paths)
        raise
    report(f"BuildKit is running at unix://{paths.socket} (rootless, pid {proc.pid})")
    return proc.pid


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by an earlier command)
            finished = 0 if os.path.exists(f"/proc/{pid}") else pid
        if finished:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _cleanup(paths: Paths) -> None:
    for path in (paths.pidfile, paths.socket, paths.otel):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(paths.rootlesskit_state, ignore_errors=True)


def stop(paths: Paths, *, report: Reporter) -> bool:
    """Stop the daemon if it runs; returns whether one was stopped."""
    pid = running_pid(paths)
    if pid is not None:
        report(f"stopping rootless BuildKit (pid {pid})")
        _terminate(pid)
    _cleanup(paths)
    return pid is not None


def remove_data(paths: Paths, rootlesskit: str | None) -> None:
    """Delete the BuildKit state. Its files belong to the user's subordinate ids, so the
    deletion runs inside a rootlesskit user namespace, where they map to root."""
    if not os.path.exists(paths.data):
        return
    if rootlesskit:
        subprocess.run([rootlesskit, "--net=host", "rm", "-rf", paths.data],
                       capture_output=True, timeout=300, check=False)
    shutil.rmtree(paths.data, ignore_errors=True)
    if os.path.exists(paths.data):
        raise BuilderError(f"could not delete the BuildKit state in `{paths.data}`")
