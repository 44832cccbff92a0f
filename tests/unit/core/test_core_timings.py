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
