"""The committed generated code matches the .proto sources (``scripts/gen-protos --check``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gen-protos"
# The script runs grpc_tools from the interpreter running these tests (whatever venv that is),
# not from a `.venv` that may not exist.
ENV = {**os.environ, "ENVD_PYTHON": sys.executable}


def test_generated_code_is_up_to_date() -> None:
    proc = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, env=ENV,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


def test_unknown_argument_is_refused() -> None:
    proc = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, env=ENV,
                          check=False)
    assert proc.returncode == 2
    assert "`--bogus`" in proc.stderr


def test_generated_modules_import_each_other_by_package_path() -> None:
    text = (SCRIPT.parents[1] / "envd_core" / "buildkit" / "_pb" / "control_pb2.py").read_text()
    lines = text.splitlines()
    local = [line for line in lines if line.startswith("from envd_core")]
    assert any("import ops_pb2" in line for line in local)
    assert any("import worker_pb2" in line for line in local)
    assert all(line.startswith("from envd_core.buildkit._pb import ") for line in local)
    assert not [line for line in lines if line.startswith("import ") and "_pb2" in line]
