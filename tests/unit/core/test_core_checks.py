"""The static checks (``scripts/check``) stay pinned, explicit and wired into CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

# In the standard library from Python 3.11; the checks themselves run on any supported Python.
tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / "scripts" / "check"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dev_pins() -> dict[str, str]:
    project = _pyproject()["project"]
    pins: dict[str, str] = {}
    for requirement in project["optional-dependencies"]["dev"]:
        name, sep, version = requirement.partition("==")
        assert sep, f"dev requirement `{requirement}` is not pinned with =="
        pins[name.strip()] = version.strip()
    return pins


def test_checkers_and_stub_packages_are_pinned() -> None:
    pins = _dev_pins()
    for dist in ("mypy", "ruff", "mypy-protobuf", "types-grpcio", "types-protobuf"):
        assert dist in pins, f"{dist} missing from the dev extra"


def test_gen_protos_pins_the_same_generators_as_the_dev_extra() -> None:
    script = (ROOT / "scripts" / "gen-protos").read_text()
    required = dict(re.findall(r"^require (\S+) (\S+)$", script, flags=re.MULTILINE))
    pins = _dev_pins()
    assert required == {d: pins[d] for d in ("grpcio-tools", "mypy-protobuf")}


def test_ruff_select_is_explicit_and_mypy_strict_at_the_python_floor() -> None:
    tool = _pyproject()["tool"]
    select = tool["ruff"]["lint"]["select"]
    assert {"E", "F", "W", "I", "B", "UP", "RUF", "SIM"} <= set(select)
    mypy = tool["mypy"]
    assert mypy["strict"] is True
    floor = _pyproject()["project"]["requires-python"]
    assert floor == f">={mypy['python_version']}"
    assert "envd_core" in mypy["files"]


def test_ci_runs_the_checks_before_the_tests() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    check = next(i for i, line in enumerate(lines) if "scripts/check" in line)
    tests = next(i for i, line in enumerate(lines) if line.startswith("scripts/test"))
    assert check < tests
    assert os.access(CHECK, os.X_OK)


def test_check_without_the_tools_says_how_to_get_them(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy2(CHECK, scripts / "check")
    proc = subprocess.run(
        [str(scripts / "check")], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 2
    assert "scripts/setup" in proc.stderr
