"""Where a command's time goes, for the benchmarks (``ENVD_TIMINGS=FILE``).

With ``ENVD_TIMINGS`` set, :func:`mark` records how long each named phase took (wall seconds
since the previous mark), :func:`count` counts events (Docker API requests), and :func:`dump`
writes both, with the wall-clock times of the first mark and of the dump, as JSON to that file
when the command ends. ``bench/bench_build.py`` reads it to split a cached rebuild into
interpreter and imports, Starlark, LLB, connect, session, solve, image config and push;
``bench/bench_up.py`` splits ``envd up`` / ``envd run`` the same way.

Timing nests: ``envd up`` starts it before its build, so the build's own :func:`start` and
:func:`dump` (``run_build``) only add their phases to the outer command's, which writes the file
once at its end. Unset (the normal case), every call is a no-op costing one dictionary lookup.
"""

from __future__ import annotations

import os
import threading
import time

_phases: list[tuple[str, float]] = []
_counts: dict[str, int] = {}
_last: list[float] = []
_first_epoch: list[float] = []
_depth: list[int] = [0]
_lock = threading.Lock()  # count() runs in the threads that make the requests


def enabled() -> bool:
    """Whether timings are being recorded (``ENVD_TIMINGS`` names a file)."""
    return bool(os.environ.get("ENVD_TIMINGS"))


def start() -> None:
    """Begin timing: the next :func:`mark` measures from here.

    Inside an already started timing (a build inside ``envd up``) this only nests: the phases
    go on from the outer command's last mark and the matching :func:`dump` writes nothing.
    """
    if not enabled():
        return
    if _first_epoch:
        _depth[0] += 1
        return
    _last[:] = [time.perf_counter()]
    _first_epoch[:] = [time.time()]


def begin_at(perf: float, epoch: float, phase: str) -> None:
    """Begin timing at an earlier moment (``perf_counter``/``time.time`` values) and record
    ``phase`` as ending now; the command's own :func:`start` then nests inside.

    The resident child (:mod:`envd_core.resident.child`) starts timing where its client
    process started, so its first phase is the client and the hand-off; the child calls the
    outermost :func:`dump`. ``perf_counter`` is CLOCK_MONOTONIC on Linux, comparable across
    processes.
    """
    if not enabled() or _first_epoch:
        return
    _last[:] = [perf]
    _first_epoch[:] = [epoch]
    mark(phase)


def mark(phase: str) -> None:
    """Record that ``phase`` ended now (it began at the previous mark or :func:`start`)."""
    if not enabled() or not _last:
        return
    now = time.perf_counter()
    _phases.append((phase, now - _last[0]))
    _last[0] = now


def count(event: str, n: int = 1) -> None:
    """Count ``n`` more of ``event`` (e.g. ``docker requests``); written by :func:`dump`."""
    if not enabled():
        return
    with _lock:
        _counts[event] = _counts.get(event, 0) + n


def dump() -> None:
    """Write the recorded phases to ``$ENVD_TIMINGS`` (summing a phase seen several times).

    The dump matching a nested :func:`start` writes nothing: the outermost one writes it all.
    """
    path = os.environ.get("ENVD_TIMINGS")
    if not path or not _first_epoch:
        return
    if _depth[0] > 0:
        _depth[0] -= 1
        return
    import json

    totals: dict[str, float] = {}
    for phase, seconds in _phases:
        totals[phase] = totals.get(phase, 0.0) + seconds
    with _lock:
        counts = dict(_counts)
    doc = {"started_epoch": _first_epoch[0], "ended_epoch": time.time(), "phases": totals,
           "counts": counts}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
