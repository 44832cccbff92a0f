"""The infra script's process bookkeeping, exercised on harmless processes in a scratch dir.

These need no running infra: they load ``scripts/infra`` as a module with ENVD_INFRA_DIR
pointing at a temporary directory and start ``sleep`` instead of a daemon.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "infra"


@pytest.fixture
def infra_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("ENVD_INFRA_DIR", str(tmp_path / "state"))
    loader = importlib.machinery.SourceFileLoader("envd_infra_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("envd_infra_script", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    yield mod
    for rec in (tmp_path / "state" / "pids").glob("*.json"):
        mod.stop(rec.stem, grace=1)


def test_started_process_is_tracked_and_stopped(infra_mod: ModuleType) -> None:
    pid = infra_mod.start_daemon("sleeper", ["sleep", "600"], lambda: True)
    assert infra_mod.tracked("sleeper") == pid
    assert infra_mod.stop("sleeper") is True
    assert infra_mod.tracked("sleeper") is None
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_recycled_pid_is_never_killed(infra_mod: ModuleType) -> None:
    victim = subprocess.Popen(["sleep", "600"])
    try:
        infra_mod.PIDS.mkdir(parents=True)
        # A pid file naming a live process with a different start time: not ours any more.
        (infra_mod.PIDS / "ghost.json").write_text(json.dumps(
            {"pid": victim.pid, "start": "1", "argv": ["dockerd"]}))
        assert infra_mod.tracked("ghost") is None
        assert infra_mod.stop("ghost") is False
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_daemon_that_dies_while_starting_reports_its_log(infra_mod: ModuleType) -> None:
    with pytest.raises(infra_mod.InfraError) as err:
        infra_mod.start_daemon("broken", ["sh", "-c", "echo no-such-config >&2; exit 3"],
                               lambda: False)
    assert "exited with 3" in str(err.value)
    assert "no-such-config" in infra_mod.tail(err.value.log)
    assert infra_mod.tracked("broken") is None


def test_daemon_that_never_gets_ready_is_killed(infra_mod: ModuleType) -> None:
    with pytest.raises(infra_mod.InfraError, match="did not become ready"):
        infra_mod.start_daemon("stuck", ["sleep", "600"], lambda: False, timeout=0.5)
    assert not list(infra_mod.PIDS.glob("stuck.json"))


def test_usage_error_exit_code() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "frobnicate"], capture_output=True,
                          text=True, env={**os.environ}, check=False)
    assert proc.returncode == 2
    assert "up" in proc.stderr
