"""A no-progress watchdog for solves, and the one-line errors of a daemon lost mid-build.

A frozen buildkitd (SIGSTOPped, swapped out, a hung host) keeps its TCP connection open: the
kernel still acknowledges packets, so a Solve call waits forever. A long silent step (``sleep
600`` in a ``run``) looks the same from the Status stream. The watchdog tells them apart: when
the Status stream has been silent for ``idle`` seconds it asks the daemon for its workers
(``ListWorkers``, a cheap unary call on the same channel) with a ``probe`` deadline. A live
daemon answers and the build goes on; a frozen one does not, and the build stops with one line.

Why a probe and not HTTP/2 keepalive pings alone: BuildKit's gRPC server keeps grpc-go's default
enforcement (pings at most every 5 minutes), so frequent client pings get the connection closed
with ``too_many_pings``; a probe is an ordinary call the server always accepts.

Settings: ``ENVD_SOLVE_WATCHDOG="idle=60,probe=20"`` (seconds; ``idle=0`` turns the watchdog
off, for a daemon known to be slow to answer under load).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from envd_core.errors import BuilderError, ErrorKind, ValidationError

if TYPE_CHECKING:
    import grpc

    from envd_core.buildkit.transport import Connection

#: Environment variable with the watchdog's settings.
WATCHDOG_ENV = "ENVD_SOLVE_WATCHDOG"
T = TypeVar("T")


@attrs.frozen
class WatchdogSettings:
    """Seconds of Status silence before a probe, and how long the probe may take."""

    idle: float = 60.0
    probe: float = 20.0

    @classmethod
    def from_env(cls) -> WatchdogSettings:
        """The defaults with :data:`WATCHDOG_ENV` applied."""
        text = os.environ.get(WATCHDOG_ENV, "").strip()
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = part.partition("=")
            key = key.strip()
            try:
                value = float(raw.strip().rstrip("s"))
            except ValueError:
                value = -1.0
            if key not in ("idle", "probe") or value < 0 or (key == "probe" and value == 0):
                raise ValidationError(
                    f"{WATCHDOG_ENV}: bad setting `{part}`; use idle=SECONDS,probe=SECONDS "
                    "(idle=0 turns the watchdog off)"
                )
            values[key] = value
        return cls(**values)


class Progress:
    """When the Status stream last delivered something (monotonic seconds)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Record progress now."""
        with self._lock:
            self.last = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last progress."""
        with self._lock:
            return time.monotonic() - self.last

    def wrap(self, on_status: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """``on_status`` that also records progress."""

        def call(resp: Any) -> None:
            self.touch()
            if on_status is not None:
                on_status(resp)

        return call


def wait_solve(future: grpc.Future[Any], connection: Connection, progress: Progress,
               settings: WatchdogSettings | None = None,
               probe: Callable[[Connection, float], None] | None = None) -> Any:
    """``future.result()``, but raise :class:`BuilderError` when the daemon stops answering.

    ``probe`` (default: ListWorkers with a deadline) raises when the daemon does not answer.

    The wait is on an event the future's done-callback sets, not on ``future.result(timeout)``:
    grpc's waits wake every 0.1 s to let signal handlers run (grpc/_common.py), ~30 wake-ups of
    the main thread in a 3 s solve, each taking the GIL from the threads that do the work. On
    POSIX a lock wait is interrupted by signals anyway, so Ctrl-C still cancels at once.
    """
    import grpc

    settings = settings or WatchdogSettings.from_env()
    done = threading.Event()
    future.add_done_callback(lambda _future: done.set())
    if settings.idle <= 0:
        done.wait()
        return future.result()
    probe = probe or _list_workers
    while True:
        if done.wait(max(0.05, settings.idle - progress.idle_for())):
            return future.result()
        if progress.idle_for() < settings.idle:
            continue
        try:
            probe(connection, settings.probe)
        except grpc.RpcError as exc:
            if future.done():  # the solve ended meanwhile: its own outcome wins
                return future.result()
            code: Any = exc.code()  # None when the call never started
            raise frozen_error(connection.target, settings, progress.idle_for(),
                               getattr(code, "name", "")) from None
        progress.touch()  # alive: a long silent step; look again after another idle period


def _list_workers(connection: Connection, timeout: float) -> None:
    from envd_core.buildkit._pb import control_pb2

    call = connection.channel.unary_unary(
        "/moby.buildkit.v1.Control/ListWorkers",
        request_serializer=control_pb2.ListWorkersRequest.SerializeToString,
        response_deserializer=control_pb2.ListWorkersResponse.FromString,
    )
    call(control_pb2.ListWorkersRequest(), timeout=timeout)


def frozen_error(target: str, settings: WatchdogSettings, idle: float,
                 code: str) -> BuilderError:
    """The line for a daemon that stopped answering mid-build."""
    why = "did not answer a health check" if code == "DEADLINE_EXCEEDED" else (
        f"failed a health check ({code})" if code else "did not answer a health check")
    return BuilderError(
        f"BuildKit at `{target}` stopped answering during the build: no progress for "
        f"{idle:.0f}s and it {why} within {settings.probe:g}s; the daemon may be frozen, "
        "stopped or overloaded",
        hint=f"check buildkitd, or wait longer with {WATCHDOG_ENV}=idle=600,probe=120 "
             f"(idle=0 waits forever)",
        kind=ErrorKind.TIMEOUT,
    )


def lost_daemon_error(target: str, detail: str, step: str | None) -> BuilderError:
    """The line for a connection that broke mid-build (the daemon was killed or restarted):
    not a TLS or address problem, whatever the transport's text says."""
    during = f" (during step `{step}`)" if step else ""
    first = (detail.strip().splitlines() or [""])[0]
    return BuilderError(
        f"BuildKit at `{target}` went away during the build{during}: {first or 'connection lost'}",
        hint="check whether buildkitd was stopped, killed or restarted, then build again",
        kind=ErrorKind.UNAVAILABLE,
    )
