"""The daemons ``up`` starts, tracked by pid *and* kernel start time, and the state-dir lock.

A pid file (``pids/NAME.json``) records the pid, the start time and the argv. A recycled pid has
another start time, so ``stop`` never signals a process ``up`` did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from . import config
from .shell import InfraError


def starttime(pid: int) -> str | None:
    """Kernel start time of ``pid``; with the pid it identifies a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, merely not reaped yet (our own child during `up`)
        return None
    return fields[19]


def record(name: str) -> dict[str, object] | None:
    """The pid file of ``name`` as written by ``start_daemon``, or None."""
    try:
        rec = json.loads((config.PIDS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def tracked(name: str) -> int | None:
    """PID of the daemon ``name`` that ``up`` started, if that very process still runs."""
    rec = record(name)
    pid = rec.get("pid") if rec else None
    if rec is None or not isinstance(pid, int):
        return None
    if starttime(pid) != rec.get("start"):
        return None
    return pid


def executable_replaced(pid: int) -> bool:
    """The binary ``pid`` runs from was replaced on disk since it started (a rebuild)."""
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith(" (deleted)")
    except OSError:
        return False


def start_daemon(name: str, argv: list[str], ready: Callable[[], bool],
                 timeout: float = 60) -> int:
    """Start ``argv`` detached, wait until ``ready()``; on failure kill it and raise."""
    log = config.LOGS / f"{name}.log"
    config.LOGS.mkdir(parents=True, exist_ok=True)
    config.PIDS.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%F %T')} $ {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PATH": config.PATH_ENV})
    start = starttime(proc.pid)
    (config.PIDS / f"{name}.json").write_text(json.dumps(
        {"pid": proc.pid, "start": start, "argv": argv}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (config.PIDS / f"{name}.json").unlink(missing_ok=True)
            raise InfraError(f"{name} exited with {proc.returncode} while starting", log)
        if ready():
            time.sleep(0.2)  # a foreign process on our port also "answers": ours must live
            if proc.poll() is None:
                return proc.pid
            continue
        time.sleep(0.2)
    stop(name)  # never leave a half-started daemon behind
    raise InfraError(f"{name} did not become ready within {timeout:.0f} s", log)


def stop(name: str, grace: float = 20) -> bool:
    """Stop the daemon ``name`` if (and only if) it is the process ``up`` recorded."""
    pid = tracked(name)
    pidfile = config.PIDS / f"{name}.json"
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    start = starttime(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and starttime(pid) == start:
        time.sleep(0.1)
    if starttime(pid) == start:
        os.kill(pid, signal.SIGKILL)
    # children left in its session (runc shims of a killed buildkitd)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def lock() -> IO[str]:
    """Serialise up/down/install: several people share one machine. Keep the handle open."""
    config.STATE.mkdir(parents=True, exist_ok=True)
    fh = (config.STATE / ".lock").open("w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh
