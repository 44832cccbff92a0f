"""Small helpers shared by the infra smoke tests."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

# What `docker run --privileged` would give, minus CAP_SYS_RESOURCE which this VM lacks.
PRIVILEGED_FLAGS = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                    "--security-opt", "seccomp=unconfined",
                    "--security-opt", "apparmor=unconfined",
                    "--security-opt", "systempaths=unconfined"]


def sh(*argv: str, check: bool = True, timeout: float = 300,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on ``check`` failure show its output."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def unique(prefix: str) -> str:
    """A tag nobody else uses, so parallel runs never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write_dockerfile(directory: Path, text: str) -> Path:
    """A build context containing only a Dockerfile."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(text)
    return directory
