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
#: (phase, CPU seconds of the whole process (user + system, every thread), minor page faults)
_usage: list[tuple[str, float, int]] = []
_last_usage: list[tuple[float, int]] = []
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
    _last_usage[:] = [_rusage()]


def begin_at(perf: float, epoch: float, phase: str) -> None:
    """Begin timing at an earlier moment (``perf_counter``/``time.time`` values) and record
    ``phase`` as ending now; the command's own :func:`start` then nests inside.

    The resident child (:mod:`envd_core.resident.child`) starts timing where its client
    process started, so its first phase is the client and the hand-off; the child calls the
    outermost :func:`dump`. ``perf_counter`` is CLOCK_MONOTONIC on Linux, comparable across
    processes. The phase's CPU and page faults are the child's since its fork (a child starts
    with zero usage), so they include taking over the client's process.
    """
    if not enabled() or _first_epoch:
        return
    _last[:] = [perf]
    _first_epoch[:] = [epoch]
    _last_usage[:] = [(0.0, 0)]  # a forked child's usage counts from its fork: all of it is ours
    mark(phase)


def mark(phase: str) -> None:
    """Record that ``phase`` ended now (it began at the previous mark or :func:`start`)."""
    if not enabled() or not _last:
        return
    now = time.perf_counter()
    _phases.append((phase, now - _last[0]))
    _last[0] = now
    if _last_usage:
        cpu, faults = _rusage()
        _usage.append((phase, cpu - _last_usage[0][0], faults - _last_usage[0][1]))
        _last_usage[0] = (cpu, faults)


def _rusage() -> tuple[float, int]:
    """CPU seconds (user + system, all threads) and minor page faults of this process so far:
    under concurrency wall time is mostly waiting, so the benches compare CPU per phase (a
    forked resident child's faults are its copy-on-write of the server's pages)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


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
    cpu: dict[str, float] = {}
    faults: dict[str, int] = {}
    for phase, seconds, flt in _usage:
        cpu[phase] = cpu.get(phase, 0.0) + seconds
        faults[phase] = faults.get(phase, 0) + flt
    doc = {"started_epoch": _first_epoch[0], "ended_epoch": time.time(), "phases": totals,
           "counts": counts, "cpu": cpu, "faults": faults}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
