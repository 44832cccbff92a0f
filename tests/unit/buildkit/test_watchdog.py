"""The solve watchdog against a real gRPC server whose Solve never ends: a daemon that still
answers ListWorkers keeps the build waiting, one that stops answering ends it in one line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from envd_core.buildkit.transport import Connection, connect_tcp
from envd_core.buildkit.watchdog import (
    WATCHDOG_ENV,
    Progress,
    WatchdogSettings,
    lost_daemon_error,
    wait_solve,
)
from envd_core.errors import BuilderError, ValidationError


class Daemon:
    """A gRPC server with BuildKit's ListWorkers and a Solve that waits for ``finish``."""

    def __init__(self) -> None:
        import grpc

        self.frozen = threading.Event()
        self.finish = threading.Event()
        self.released = threading.Event()
        handlers = {
            "ListWorkers": grpc.unary_unary_rpc_method_handler(self._list_workers),
            "Solve": grpc.unary_unary_rpc_method_handler(self._solve),
        }
        self.server = grpc.server(ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("moby.buildkit.v1.Control", handlers)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _list_workers(self, request: bytes, context: Any) -> bytes:
        if self.frozen.is_set():
            self.released.wait(30)  # like a SIGSTOPped daemon: never answers in time
        return b""

    def _solve(self, request: bytes, context: Any) -> bytes:
        self.finish.wait(30)
        return b""

    def solve(self, connection: Connection) -> Any:
        call = connection.channel.unary_unary("/moby.buildkit.v1.Control/Solve")
        return call.future(b"")


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.released.set()
    d.finish.set()
    d.server.stop(None)


def test_a_frozen_daemon_ends_the_build_in_one_line(daemon: Daemon) -> None:
    connection = connect_tcp("127.0.0.1", daemon.port, timeout=5)
    try:
        future = daemon.solve(connection)
        daemon.frozen.set()
        with pytest.raises(BuilderError) as info:
            wait_solve(future, connection, Progress(), WatchdogSettings(idle=0.2, probe=0.3))
        future.cancel()
    finally:
        connection.close()
    assert "stopped answering during the build" in info.value.message
    assert f"tcp://127.0.0.1:{daemon.port}" in info.value.message
    assert info.value.hint is not None and f"{WATCHDOG_ENV}=idle=" in info.value.hint


def test_a_live_daemon_with_a_silent_step_keeps_the_build_going(daemon: Daemon) -> None:
    connection = connect_tcp("127.0.0.1", daemon.port, timeout=5)
    probes: list[float] = []

    def probe(conn: Connection, timeout: float) -> None:
        from envd_core.buildkit.watchdog import _list_workers

        _list_workers(conn, timeout)
        probes.append(timeout)
        if len(probes) == 3:
            daemon.finish.set()  # the long step ends after three healthy probes

    try:
        future = daemon.solve(connection)
        assert wait_solve(future, connection, Progress(), WatchdogSettings(idle=0.1, probe=5),
                          probe=probe) == b""
    finally:
        connection.close()
    assert len(probes) >= 3


def test_progress_resets_the_idle_clock() -> None:
    progress = Progress()
    seen: list[str] = []
    wrapped = progress.wrap(seen.append)
    progress.last -= 100
    assert progress.idle_for() >= 100
    wrapped("status")
    assert progress.idle_for() < 5 and seen == ["status"]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WATCHDOG_ENV, "idle=600, probe=120s")
    assert WatchdogSettings.from_env() == WatchdogSettings(idle=600, probe=120)
    monkeypatch.setenv(WATCHDOG_ENV, "idle=0")
    assert WatchdogSettings.from_env().idle == 0
    for bad in ("idle=soon", "probe=0", "speed=1", "idle=-1"):
        monkeypatch.setenv(WATCHDOG_ENV, bad)
        with pytest.raises(ValidationError):
            WatchdogSettings.from_env()


def test_a_daemon_killed_mid_build_is_not_called_a_tls_problem() -> None:
    error = lost_daemon_error("tcp://127.0.0.1:1234", "Socket closed\nmore", "run: make")
    assert "went away during the build (during step `run: make`): Socket closed" in error.message
    assert "TLS" not in error.message and "TLS" not in (error.hint or "")
