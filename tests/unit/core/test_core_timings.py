"""ENVD_TIMINGS: phases recorded for the benchmarks, nothing done without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envd_core import timings


@pytest.fixture(autouse=True)
def _fresh() -> None:
    timings._phases.clear()
    timings._last.clear()
    timings._first_epoch.clear()
    timings._counts.clear()
    timings._usage.clear()
    timings._last_usage.clear()
    timings._depth[0] = 0


def test_phases_are_written_and_summed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "t.json"
    monkeypatch.setenv("ENVD_TIMINGS", str(out))
    timings.start()
    timings.mark("a")
    timings.mark("b")
    timings.mark("a")
    timings.dump()
    doc = json.loads(out.read_text())
    assert sorted(doc["phases"]) == ["a", "b"]
    assert all(v >= 0 for v in doc["phases"].values())
    assert doc["ended_epoch"] >= doc["started_epoch"]


def test_without_the_switch_nothing_is_recorded(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENVD_TIMINGS", raising=False)
    timings.start()
    timings.mark("a")
    timings.dump()
    assert timings._phases == []
    assert list(tmp_path.iterdir()) == []


def test_a_nested_build_adds_to_the_outer_command(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`envd up` times its build: the inner start/dump nest, the outer dump writes once."""
    out = tmp_path / "t.json"
    monkeypatch.setenv("ENVD_TIMINGS", str(out))
    timings.start()
    timings.mark("flags")
    timings.start()  # run_build inside up
    timings.mark("solve")
    timings.count("docker requests", 2)
    timings.dump()
    assert not out.exists()
    timings.mark("create")
    timings.count("docker requests")
    timings.dump()
    doc = json.loads(out.read_text())
    assert list(doc["phases"]) == ["flags", "solve", "create"]
    assert doc["counts"] == {"docker requests": 3}


def test_each_phase_records_its_cpu_and_page_faults(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Under concurrency a phase's wall time is mostly waiting: the CPU it used and the pages
    it faulted in (a forked child's copy-on-write) are what the benches compare."""
    out = tmp_path / "t.json"
    monkeypatch.setenv("ENVD_TIMINGS", str(out))
    timings.start()
    timings.mark("idle")
    buffers = [bytearray(4096 * 256) for _ in range(4)]  # touches ~1,000 fresh pages
    spent = 0
    while spent < 200_000:  # some CPU in the interpreter
        spent += buffers[0][spent % 7] + 1
    timings.mark("busy")
    timings.dump()
    doc = json.loads(out.read_text())
    assert set(doc["cpu"]) == set(doc["faults"]) == {"idle", "busy"}
    assert doc["cpu"]["busy"] > doc["cpu"]["idle"] >= 0
    assert doc["faults"]["busy"] >= 500 > doc["faults"]["idle"]
