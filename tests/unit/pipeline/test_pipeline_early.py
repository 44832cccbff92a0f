"""The early connection never has gRPC threads running while build.envd's evaluation forks.

A served command (the resident process) has grpc imported already, so its early connection
created a channel within milliseconds, and the evaluation's forked child crashed with SIGSEGV
now and then (CI, `envd up --detach --force`). The connect now waits for a gate that opens once
the evaluation has forked, or at once when no evaluation forks.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from envd_core.envdfile.lang import isolate
from envd_core.envdfile.lang.limits import EvalLimits
from envd_core.pipeline.early import EarlyConnection


class _Builder:
    """Records when ``connect`` runs: the only part of a builder the early thread calls."""

    can_bootstrap = False

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.forks_before_connect: int | None = None

    def connect(self, *, timeout: float) -> Any:
        self.forks_before_connect = forks[0]
        self.connected.set()
        return object()


forks = [0]


def test_connect_waits_for_the_evaluation_fork() -> None:
    builder = _Builder()
    early = EarlyConnection(builder)  # type: ignore[arg-type]
    early.allow_connect(after_evaluation_forks=True)
    assert not builder.connected.wait(0.3)  # the imports are done long before; still gated

    def evaluate() -> int:
        return os.getpid()

    real_fork = os.fork

    def counting_fork() -> int:
        forks[0] += 1
        return real_fork()

    os.fork = counting_fork  # type: ignore[assignment]
    try:
        child_pid = isolate.run_limited(evaluate, EvalLimits(), "build.envd")
    finally:
        os.fork = real_fork
    assert child_pid != os.getpid()  # it really ran in a forked child
    assert early.take() is not None
    assert builder.forks_before_connect == forks[0] >= 1  # connected only after the fork


def test_a_cached_definition_connects_at_once_and_take_never_deadlocks() -> None:
    builder = _Builder()
    early = EarlyConnection(builder)  # type: ignore[arg-type]
    early.allow_connect()
    assert builder.connected.wait(5)
    early.take()

    gated = EarlyConnection(_Builder())  # type: ignore[arg-type]
    assert gated.take() is not None  # a gate nobody opened: take opens it (no hang)
    isolate._AFTER_FORK.clear()
