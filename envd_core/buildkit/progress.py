"""Build progress: a trace of Status messages, and renderers for TTY, plain CI logs and JSON.

``BuildTrace`` folds StatusResponse messages into per-step state (name, timings, cached, error,
log lines); the client keeps one to name the failing step. Renderers are callables taking each
StatusResponse; pick one with ``ProgressPrinter(mode)`` where mode is ``auto|tty|plain|json``
(auto = tty when the stream is a terminal, else plain). rich loads only for the TTY view.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from rich.table import Table

    from envd_core.buildkit._pb.control_pb2 import StatusResponse

MODES = ("auto", "tty", "plain", "json")
_MAX_LOG_LINES = 200  # per step, kept for failure reports and the TTY tail


def _ts(t: Timestamp | None) -> float | None:
    if t is None or not (t.seconds or t.nanos):
        return None
    return t.seconds + t.nanos / 1e9


@dataclass
class Step:
    """What we know about one vertex."""

    digest: str
    number: int
    name: str = ""
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=_MAX_LOG_LINES))
    partial: dict[int, str] = field(default_factory=dict)  # stream -> unterminated line

    @property
    def duration(self) -> float | None:
        if self.started is None or self.completed is None:
            return None
        return max(0.0, self.completed - self.started)


class BuildTrace:
    """Fold StatusResponse messages into steps (in first-seen order)."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}
        self.warnings: list[str] = []

    def step(self, digest: str) -> Step:
        s = self.steps.get(digest)
        if s is None:
            s = self.steps[digest] = Step(digest=digest, number=len(self.steps) + 1)
        return s

    def update(self, resp: StatusResponse) -> None:
        for v in resp.vertexes:
            s = self.step(v.digest)
            s.name = v.name or s.name
            s.cached = s.cached or v.cached
            s.started = _ts(v.started) if v.HasField("started") else s.started
            s.completed = _ts(v.completed) if v.HasField("completed") else s.completed
            s.error = v.error or s.error
        for log in resp.logs:
            s = self.step(log.vertex)
            text = s.partial.pop(log.stream, "") + log.msg.decode("utf-8", "replace")
            *lines, rest = text.split("\n")
            s.logs.extend(line.rstrip("\r") for line in lines)
            if rest:
                s.partial[log.stream] = rest
        for w in resp.warnings:
            self.warnings.append(w.short.decode("utf-8", "replace"))

    def failed_vertex(self) -> Step | None:
        """The step that failed (the last one with an error that is not just 'canceled')."""
        failed = [s for s in self.steps.values() if s.error]
        real = [s for s in failed if "context canceled" not in s.error]
        candidates = real or failed
        return candidates[-1] if candidates else None

    def running_step(self) -> str | None:
        running = [s for s in self.steps.values() if s.started and not s.completed]
        return running[-1].name if running else None

    def log_tail(self, digest: str, n: int) -> list[str]:
        s = self.steps.get(digest)
        if s is None:
            return []
        lines = list(s.logs) + [p for p in s.partial.values() if p]
        return lines[-n:]


# ----------------------------------------------------------------------------- renderers


class Renderer(Protocol):
    """What :class:`ProgressPrinter` drives: called with each StatusResponse, closed at the end."""

    def __call__(self, resp: StatusResponse) -> None: ...
    def close(self) -> None: ...


class PlainRenderer:
    """buildctl-style ``--progress=plain`` lines, for CI logs."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.trace = BuildTrace()
        self._printed: dict[str, set[str]] = {}
        self._t0 = time.monotonic()

    def _emit(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def __call__(self, resp: StatusResponse) -> None:
        self.trace.update(resp)
        for v in resp.vertexes:
            s = self.trace.step(v.digest)
            done = self._printed.setdefault(v.digest, set())
            if "name" not in done and (s.started or s.cached):
                done.add("name")
                self._emit(f"#{s.number} {s.name}")
            if s.cached and "cached" not in done:
                done.add("cached")
                self._emit(f"#{s.number} CACHED")
            elif s.error and "error" not in done:
                done.add("error")
                self._emit(f"#{s.number} ERROR: {s.error}")
            elif s.completed and "done" not in done and not s.cached:
                done.add("done")
                self._emit(f"#{s.number} DONE {s.duration or 0:.1f}s")
        for st in resp.statuses:
            s = self.trace.step(st.vertex)
            if st.HasField("completed"):
                size = f" {st.current}/{st.total}" if st.total else ""
                self._emit(f"#{s.number} {st.ID}{size} done")
        for log in resp.logs:
            s = self.trace.step(log.vertex)
            t = time.monotonic() - self._t0
            for line in log.msg.decode("utf-8", "replace").splitlines():
                self._emit(f"#{s.number} {t:.3f} {line}")
        for w in resp.warnings:
            self._emit(f"WARNING: {w.short.decode('utf-8', 'replace')}")

    def close(self) -> None:
        pass


class JsonRenderer:
    """One JSON object per line per event: vertex, status, log, warning."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def _emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, sort_keys=True) + "\n")
        self.stream.flush()

    def __call__(self, resp: StatusResponse) -> None:
        for v in resp.vertexes:
            self._emit(
                {
                    "type": "vertex",
                    "digest": v.digest,
                    "name": v.name,
                    "inputs": list(v.inputs),
                    "cached": v.cached,
                    "started": _ts(v.started) if v.HasField("started") else None,
                    "completed": _ts(v.completed) if v.HasField("completed") else None,
                    "error": v.error or None,
                }
            )
        for st in resp.statuses:
            self._emit(
                {
                    "type": "status",
                    "vertex": st.vertex,
                    "id": st.ID,
                    "name": st.name,
                    "current": st.current,
                    "total": st.total,
                    "completed": st.HasField("completed"),
                }
            )
        for log in resp.logs:
            self._emit(
                {
                    "type": "log",
                    "vertex": log.vertex,
                    "stream": log.stream,
                    "data": log.msg.decode("utf-8", "replace"),
                }
            )
        for w in resp.warnings:
            self._emit(
                {
                    "type": "warning",
                    "vertex": w.vertex,
                    "level": w.level,
                    "message": w.short.decode("utf-8", "replace"),
                }
            )

    def close(self) -> None:
        pass


def _start_key(s: Step) -> tuple[float, int]:
    return (s.started if s.started is not None else float("inf"), s.number)


class TTYRenderer:
    """A live rich view: one line per step with its time or CACHED, and the running step's
    last log lines underneath."""

    TAIL = 6

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.trace = BuildTrace()
        self.console = Console(file=stream, force_terminal=True)
        self._t0 = time.monotonic()
        self._live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=False
        )
        self._live.start()

    def _render(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        elapsed = time.monotonic() - self._t0
        table = Table.grid(padding=(0, 1))
        table.add_column(justify="right", style="dim")
        table.add_column()
        table.add_column(justify="right")
        table.add_row("", Text(f"Building {elapsed:.1f}s", style="bold"), "")
        # In start order (the daemon announces vertices in graph order, not run order).
        for s in sorted(self.trace.steps.values(), key=_start_key):
            if not (s.started or s.cached):
                continue
            if s.cached:
                state = Text("CACHED", style="cyan")
            elif s.error:
                state = Text("ERROR", style="bold red")
            elif s.completed:
                state = Text(f"{s.duration or 0:.1f}s", style="green")
            else:
                state = Text(f"{time.time() - (s.started or time.time()):.1f}s", style="yellow")
            table.add_row(f"#{s.number}", Text(s.name, overflow="ellipsis", no_wrap=True), state)
            if (s.started and not s.completed) or s.error:
                for line in self.trace.log_tail(s.digest, self.TAIL):
                    table.add_row("", Text(f"  {line}", style="dim", no_wrap=True), "")
        return table

    def __call__(self, resp: StatusResponse) -> None:
        self.trace.update(resp)
        self._live.update(self._render())

    def close(self) -> None:
        self._live.update(self._render())
        self._live.stop()


class ProgressPrinter:
    """Pick a renderer by mode and forward StatusResponses to it; use as ``on_status``."""

    def __init__(self, mode: str = "auto", stream: IO[str] | None = None) -> None:
        if mode not in MODES:
            raise ValidationError(f"invalid progress mode `{mode}`: use one of {', '.join(MODES)}")
        out = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "tty" if hasattr(out, "isatty") and out.isatty() else "plain"
        self.mode = mode
        self._renderer: Renderer
        if mode == "tty":
            self._renderer = TTYRenderer(out)
        elif mode == "json":
            self._renderer = JsonRenderer(out)
        else:
            self._renderer = PlainRenderer(out)

    def __call__(self, resp: StatusResponse) -> None:
        self._renderer(resp)

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
