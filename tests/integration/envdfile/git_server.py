"""A real ``git daemon`` on 127.0.0.1 serving bare repositories, for the include tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_repo(root: Path, name: str, files: dict[str, str], tag: str = "v1") -> Path:
    """A bare repository ``root/served/<name>.git`` with ``files`` in one commit + ``tag``."""
    work = root / f"work-{name}"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "v1")
    git(work, "tag", tag)
    served = root / "served"
    served.mkdir(exist_ok=True)
    git(root, "clone", "-q", "--bare", str(work), str(served / f"{name}.git"))
    return served


@contextmanager
def git_daemon(served: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``git daemon`` exporting ``served`` on a free port: its ``git://`` base URL, the process.

    Stopped by its pid at the end.
    """
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
         "--listen=127.0.0.1", f"--port={port}", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"git daemon did not listen on {port}") from None
                time.sleep(0.1)
        yield f"git://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
