"""``--sync`` and ``envd sync``: the project directory copied into an environment over SSH.

Upstream's ``envd run --sync`` runs a syncthing sidecar next to an envd-server environment. That
needs syncthing's image and a relay, neither reachable here, and a runner without mounts only
needs the local tree to reach the environment. So the copy goes over the environment's own SSH
entry (``ssh <name>.envd``, through envd-server's gateway): a tar stream of the project piped
into ``tar -x`` in the working directory, with the system OpenSSH client and ``tar`` on both
ends (every dev image has tar). One way, local to remote, as a mount would be seen from inside.

- :func:`push_project` copies the whole tree once (``up --sync`` after the start, ``envd sync``).
- :func:`watch_project` then polls modification times and sends only what changed, until
  interrupted (``envd sync --watch``). Deletions are not propagated: a one-way copy never
  removes files the environment made.

Hidden VCS folders (``.git``) are skipped: they are large and the environment does not need them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from envd_core.errors import RunnerError

__all__ = ["SKIP", "push_files", "push_project", "snapshot", "watch_project"]

#: Folder names never sent.
SKIP = frozenset({".git", ".hg", ".svn", "__pycache__"})


def _ssh_argv(host: str, ssh_config: Path | None, remote: str) -> list[str]:
    extra = ["-F", str(ssh_config)] if ssh_config is not None else []
    # BatchMode: never stop at a password prompt in the middle of a sync
    return ["ssh", *extra, "-o", "BatchMode=yes", host, remote]


def snapshot(project: Path) -> dict[str, float]:
    """Every file under ``project`` (relative POSIX path) with its modification time."""
    found: dict[str, float] = {}
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in SKIP)
        for name in files:
            path = Path(root) / name
            try:
                found[path.relative_to(project).as_posix()] = path.stat().st_mtime
            except OSError:
                continue  # vanished while walking
    return found


def push_files(project: Path, files: Iterable[str], *, host: str, remote_dir: str,
               ssh_config: Path | None = None) -> int:
    """Send ``files`` (relative to ``project``) to ``remote_dir`` in ``host``; return how many."""
    names = sorted(files)
    if not names:
        return 0
    remote = (f"mkdir -p {shlex.quote(remote_dir)} && "
              f"tar -x -m -f - -C {shlex.quote(remote_dir)}")
    tar = subprocess.Popen(
        ["tar", "-c", "-f", "-", "-C", str(project), "--null", "-T", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert tar.stdin is not None and tar.stdout is not None
    ssh = subprocess.Popen(_ssh_argv(host, ssh_config, remote), stdin=tar.stdout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tar.stdout.close()  # ssh owns the pipe now: tar sees EPIPE if ssh dies
    tar.stdin.write(b"".join(n.encode() + b"\0" for n in names))
    tar.stdin.close()
    _, ssh_err = ssh.communicate()
    tar_err = tar.stderr.read() if tar.stderr else b""
    tar.wait()
    if ssh.returncode != 0:
        last = (ssh_err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RunnerError(
            f"cannot sync `{project}` to `{host}:{remote_dir}`: ssh exited {ssh.returncode}: "
            f"{last}",
            hint=f"check that `ssh {host}` works (envd envs ls shows the environment)",
        )
    if tar.returncode != 0:
        last = (tar_err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise RunnerError(f"cannot sync `{project}`: tar exited {tar.returncode}: {last}")
    return len(names)


def push_project(project: Path, *, host: str, remote_dir: str,
                 ssh_config: Path | None = None) -> dict[str, float]:
    """Copy the whole project once; return the snapshot sent (for :func:`watch_project`)."""
    state = snapshot(project)
    push_files(project, state, host=host, remote_dir=remote_dir, ssh_config=ssh_config)
    return state


def watch_project(project: Path, state: dict[str, float], *, host: str, remote_dir: str,
                  ssh_config: Path | None = None, interval: float = 1.0,
                  report: Callable[[int], None] | None = None,
                  rounds: int | None = None) -> None:
    """Send what changed since ``state`` every ``interval`` seconds (``rounds``: stop after N)."""
    done = 0
    while rounds is None or done < rounds:
        time.sleep(interval)
        now = snapshot(project)
        changed = [name for name, mtime in now.items() if state.get(name) != mtime]
        sent = push_files(project, changed, host=host, remote_dir=remote_dir,
                          ssh_config=ssh_config)
        if sent and report is not None:
            report(sent)
        state = now
        done += 1
