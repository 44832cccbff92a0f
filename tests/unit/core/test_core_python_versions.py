"""The Pythons we claim: every pyproject.toml (core and plugins) declares the same floor and the
same version classifiers, and scripts/test-pythons (what .ci/run uses) tests their extremes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the floor is 3.10: tomli (a test dependency there) is the same parser
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
PYPROJECTS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]


def _project(path: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return project


def _minors(project: dict[str, Any]) -> list[int]:
    found = [re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c)
             for c in project.get("classifiers", [])]
    return sorted(int(m.group(1)) for m in found if m)


def test_core_claims_a_contiguous_range_starting_at_its_floor() -> None:
    core = _project(ROOT / "pyproject.toml")
    minors = _minors(core)
    assert minors == list(range(minors[0], minors[-1] + 1)), minors
    assert core["requires-python"] == f">=3.{minors[0]}"
    # The interpreter running this suite is one the project claims.
    assert sys.version_info[:2] in {(3, m) for m in minors}


@pytest.mark.parametrize("path", PYPROJECTS[1:], ids=lambda p: p.parent.name)
def test_every_plugin_declares_the_cores_floor_and_classifiers(path: Path) -> None:
    core, plugin = _project(ROOT / "pyproject.toml"), _project(path)
    assert plugin["requires-python"] == core["requires-python"]
    assert _minors(plugin) == _minors(core)


def test_test_pythons_lists_the_classifiers() -> None:
    # scripts/test-pythons reads the classifiers without a TOML parser (it runs on any python3).
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "test-pythons"), "--list"],
                          capture_output=True, text=True, check=True)
    minors = _minors(_project(ROOT / "pyproject.toml"))
    assert proc.stdout.split() == [f"3.{m}" for m in minors]


def test_test_pythons_refuses_an_unclaimed_version() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "test-pythons"), "3.9"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "`3.9`" in proc.stderr and "\n" not in proc.stderr.strip()


def test_a_missing_interpreter_fails_loudly(tmp_path: Path) -> None:
    # No pyenv and a PATH without python3.13: never a silent skip.
    env = {"PATH": "/usr/bin:/bin", "PYENV_ROOT": str(tmp_path / "no-pyenv"),
           "HOME": str(tmp_path)}
    script = str(ROOT / "scripts" / "test-pythons")
    proc = subprocess.run([sys.executable, script, "3.13"], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 1
    assert "Python 3.13 NOT FOUND" in proc.stderr
    assert "Python 3.13: MISSING" in proc.stdout
    warned = subprocess.run([sys.executable, script, "3.13"], capture_output=True, text=True,
                            env={**env, "ENVD_ALLOW_MISSING_PYTHONS": "1"}, check=False)
    assert warned.returncode == 0
    assert "Python 3.13 NOT FOUND" in warned.stderr
