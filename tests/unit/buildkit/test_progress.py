"""Progress renderers replaying StatusResponse streams recorded from a real buildkitd v0.18.2.

The ``data/status_*.bin`` files are length-prefixed serialized StatusResponses captured with
``on_status`` during real solves: a fresh build (exec printing to stdout and stderr, then a
mkfile), the same build fully cached, and an exec that exits 7.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from envd_core.buildkit._pb import control_pb2
from envd_core.buildkit.progress import BuildTrace, ProgressPrinter
from envd_core.errors import ValidationError

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> list[control_pb2.StatusResponse]:
    raw = (DATA / f"status_{name}.bin").read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack(">I", raw[pos : pos + 4])
        out.append(control_pb2.StatusResponse.FromString(raw[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def replay(mode: str, name: str) -> str:
    buf = io.StringIO()
    with ProgressPrinter(mode, stream=buf) as p:
        for msg in recorded(name):
            p(msg)
    return buf.getvalue()


def test_trace_of_successful_build() -> None:
    trace = BuildTrace()
    for m in recorded("ok"):
        trace.update(m)
    names = [s.name for s in trace.steps.values()]
    assert "greet" in names and "mkfile /x" in names
    greet = next(s for s in trace.steps.values() if s.name == "greet")
    assert sorted(greet.logs) == ["line2", "recorded-ok"]
    assert greet.duration is not None and not greet.error
    assert trace.failed_vertex() is None


def test_trace_of_failed_build_names_step_and_tail() -> None:
    trace = BuildTrace()
    for m in recorded("fail"):
        trace.update(m)
    failed = trace.failed_vertex()
    assert failed is not None and failed.name == "explode"
    assert "exit code: 7" in failed.error
    # stdout and stderr are separate streams: their relative order is up to the daemon
    assert sorted(trace.log_tail(failed.digest, 5)) == ["before-failure", "to-stderr"]


def test_plain_renderer() -> None:
    out = replay("plain", "ok")
    lines = out.splitlines()
    assert any(line.endswith(" greet") for line in lines)
    assert any("recorded-ok" in line for line in lines)
    assert any(" DONE " in line for line in lines)
    cached = replay("plain", "cached")
    assert "CACHED" in cached
    failed = replay("plain", "fail")
    assert "ERROR: process" in failed and "before-failure" in failed


def test_json_renderer_one_object_per_line() -> None:
    events = [json.loads(line) for line in replay("json", "fail").splitlines()]
    assert {e["type"] for e in events} >= {"vertex", "log"}
    assert any(e["type"] == "log" and "before-failure" in e["data"] for e in events)
    assert any(
        e["type"] == "vertex" and e["error"] and "exit code: 7" in e["error"] for e in events
    )


def test_tty_renderer_shows_steps_cached_and_logs() -> None:
    out = replay("tty", "ok")
    assert "greet" in out and "mkfile /x" in out
    assert "CACHED" in replay("tty", "cached")
    failed = replay("tty", "fail")
    assert "ERROR" in failed and "to-stderr" in failed


def test_auto_mode_picks_plain_for_non_tty() -> None:
    assert ProgressPrinter("auto", stream=io.StringIO()).mode == "plain"


def test_bad_mode() -> None:
    with pytest.raises(ValidationError, match="`fancy`"):
        ProgressPrinter("fancy")


def test_log_lines_split_across_messages_and_running_step() -> None:
    trace = BuildTrace()
    first = control_pb2.StatusResponse()
    v = first.vertexes.add(digest="sha256:a", name="compile")
    v.started.seconds = 100
    first.logs.add(vertex="sha256:a", stream=1, msg=b"hel")
    first.logs.add(vertex="sha256:a", stream=2, msg=b"warn: x\r\n")
    trace.update(first)
    assert trace.running_step() == "compile"
    assert trace.log_tail("sha256:a", 5) == ["warn: x", "hel"]  # partial line shown last
    second = control_pb2.StatusResponse()
    second.logs.add(vertex="sha256:a", stream=1, msg=b"lo\nworld\n")
    done = second.vertexes.add(digest="sha256:a", name="compile")
    done.completed.seconds = 102
    trace.update(second)
    assert trace.log_tail("sha256:a", 5) == ["warn: x", "hello", "world"]
    assert trace.running_step() is None
    assert trace.steps["sha256:a"].duration == 2.0
    assert trace.log_tail("sha256:unknown", 5) == []


# -- failure reports (issue 18) ----------------------------------------------------------------
def test_short_error_drops_generated_commands() -> None:
    from envd_core.buildkit.progress import short_error

    v018 = ('process "/bin/sh -ec /opt/envd/venv/bin/pip install \\"six\\"" did not complete '
            "successfully: exit code: 1")
    assert short_error(v018) == "process […] did not complete successfully: exit code: 1"
    v08 = "executor failed running [/bin/sh -ec pip install six]: exit code: 1"
    assert short_error(v08) == "executor failed running […]: exit code: 1"
    assert short_error("plain text") == "plain text"


def test_json_view_reports_the_failure_as_one_event() -> None:
    buf = io.StringIO()
    failure = {"message": "step `x` failed with exit code 7", "hint": "h", "step": "x",
               "exit_code": 7, "log_tail": ["a", "b"], "cause": None, "stage": "step"}
    with ProgressPrinter("json", stream=buf) as p:
        p.failed(failure)
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert events == [{"type": "failure", **failure}]


def test_plain_view_error_line_is_short_and_failure_adds_nothing() -> None:
    buf = io.StringIO()
    with ProgressPrinter("plain", stream=buf) as p:
        for msg in recorded("fail"):
            p(msg)
        before = buf.getvalue()
        p.failed({"message": "m"})
    assert buf.getvalue() == before
    errors = [line for line in before.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "/bin/sh" not in errors[0] and "exit code: 7" in errors[0]


@pytest.mark.parametrize("count", [1, 3])
def test_tty_view_shows_the_failed_steps_last_lines_once(count: int) -> None:
    from envd_core.buildkit.progress import TTYRenderer

    trace = BuildTrace()
    for m in recorded("fail"):
        trace.update(m)
    failed = trace.failed_vertex()
    assert failed is not None
    tail = trace.log_tail(failed.digest, count)
    buf = io.StringIO()
    view = TTYRenderer(buf, log_lines=count)
    for m in recorded("fail"):
        view(m)
    view.close()
    # The last frame (rich redraws in place) holds each tail line exactly once.
    last = buf.getvalue().rsplit("Building", 1)[-1]
    for line in tail:
        assert last.count(line) == 1, (line, last)
    assert len(tail) == min(count, len(trace.log_tail(failed.digest, 200)))
