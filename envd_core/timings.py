"""Where a build's time goes, for the benchmarks (``ENVD_TIMINGS=FILE``).

With ``ENVD_TIMINGS`` set, :func:`mark` records how long each named phase took (wall seconds
since the previous mark) and :func:`dump` writes them, with the wall-clock time of the first mark,
as JSON to that file when the build ends. ``bench/bench_build.py`` reads it to split a cached
rebuild into interpreter and imports, Starlark, LLB, connect, session, solve, image config and
push. Unset (the normal case), every call is a no-op costing one dictionary lookup.
"""

from __future__ import annotations

import os
import time

_phases: list[tuple[str, float]] = []
_last: list[float] = []
_first_epoch: list[float] = []


def enabled() -> bool:
    """Whether timings are being recorded (``ENVD_TIMINGS`` names a file)."""
    return bool(os.environ.get("ENVD_TIMINGS"))


def start() -> None:
    """Begin timing: the next :func:`mark` measures from here."""
    if enabled():
        _last[:] = [time.perf_counter()]
        _first_epoch[:] = [time.time()]


def mark(phase: str) -> None:
    """Record that ``phase`` ended now (it began at the previous mark or :func:`start`)."""
    if not enabled() or not _last:
        return
    now = time.perf_counter()
    _phases.append((phase, now - _last[0]))
    _last[0] = now


def dump() -> None:
    """Write the recorded phases to ``$ENVD_TIMINGS`` (summing a phase seen several times)."""
    path = os.environ.get("ENVD_TIMINGS")
    if not path or not _first_epoch:
        return
    import json

    totals: dict[str, float] = {}
    for phase, seconds in _phases:
        totals[phase] = totals.get(phase, 0.0) + seconds
    doc = {"started_epoch": _first_epoch[0], "ended_epoch": time.time(), "phases": totals}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
