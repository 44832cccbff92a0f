"""A throwaway venv with the repository's packages installed as users install them: wheels.

The development venv (``scripts/setup``) installs everything editable: its ``.pth`` files put
the repository on ``sys.path`` and every plugin's code is outside its ``dist-info``, which a
user's ``pip install envd-core envd-docker-runner …`` never has. The start-up benchmarks
measure this venv too, so their figures are what users run.

``pip install`` of the local package directories (core and every ``plugins/*``), without
``-e``, into ``bench/.wheel-venv/<key>`` (ignored by git); dependencies come from PyPI through
pip's cache. The key is a hash of the packages' source files, so an unchanged tree reuses the
venv and any edit builds a fresh one (the old ones are removed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "bench" / ".wheel-venv"


def _packages() -> list[Path]:
    return [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir()
                          if (p / "pyproject.toml").is_file())]


def _key(packages: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for package in packages:
        roots = [package / "pyproject.toml"]
        roots += [p for p in package.iterdir() if p.is_dir() and p.name.startswith("envd_")]
        for root in roots:
            files = [root] if root.is_file() else sorted(root.rglob("*"))
            for file in files:
                if file.is_file() and "__pycache__" not in file.parts:
                    digest.update(str(file.relative_to(ROOT)).encode())
                    digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def wheel_venv(log: bool = True) -> Path:
    """The ``bin`` directory of a venv with the current tree installed from wheels."""
    packages = _packages()
    key = _key(packages)
    venv = BASE / key
    if (venv / ".complete").exists():
        return venv / "bin"
    if BASE.exists():
        for old in BASE.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    BASE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if log:
        print(f"bench: installing the tree from wheels into {venv} (once per source change)",
              file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log_file = BASE / f"{key}.pip.log"
    with open(log_file, "w") as out:
        done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                               "--disable-pip-version-check", *map(str, packages)],
                              stdout=out, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
    if done.returncode != 0:
        sys.exit(f"bench: pip install into the wheel venv failed: see {log_file}")
    (venv / ".complete").write_text("")
    if log:
        print(f"bench: wheel venv ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return venv / "bin"
