"""Helpers of the docker-container integration tests (this module holds no tests)."""

from __future__ import annotations

import subprocess


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``docker`` CLI, used only by tests to act behind envd's back (kill, pause, rm)."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def exists(kind: str, name: str) -> bool:
    """Whether dockerd has a ``container`` or ``volume`` by that name."""
    return docker_cli(kind, "inspect", name, check=False).returncode == 0
