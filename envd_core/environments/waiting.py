"""Waiting for an environment (running, then its SSH server greeting) and a small thread
helper for what ``up``/``run`` overlap: no runner calls of their own beyond ``inspect``."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from envd_core.environment import Environment, EnvironmentStatus
from envd_core.errors import RunnerError
from envd_core.runner import Runner

__all__ = ["Background", "ssh_answers", "wait_running", "wait_ssh"]


def wait_running(runner: Runner, name: str, timeout: float,
                 sleep: Callable[[float], None] = time.sleep) -> Environment:
    """Poll until ``name`` runs (upstream polls every second, up to ``--timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        environment = runner.inspect(name)
        if environment.status is EnvironmentStatus.RUNNING:
            return environment
        if environment.status in (EnvironmentStatus.EXITED, EnvironmentStatus.DEAD):
            raise RunnerError(f"environment `{name}` is {environment.status.value} after start",
                              hint="see why with the runner's logs; remove it with "
                                   f"envd down --name {name}")
        if time.monotonic() >= deadline:
            raise RunnerError(f"environment `{name}` is not running after {timeout:g}s "
                              f"(it is {environment.status.value})",
                              hint="raise --timeout, or check the runner")
        sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def ssh_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Does an SSH server greet on ``host:port``? (A port proxy alone accepts and closes.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(environment: Environment, timeout: float,
             progress: Callable[[str], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll until the environment's SSH server greets (every 20 ms), or fail after ``timeout``.

    The greeting, not the TCP accept: Docker's port proxy accepts before sshd listens, then
    closes (or, on some setups, holds the connection silent: hence the short read timeout)."""
    assert environment.ssh is not None
    host = "127.0.0.1" if environment.ssh.host in ("0.0.0.0", "") else environment.ssh.host
    port = environment.ssh.port
    start = time.monotonic()
    told = 0.0
    while not ssh_answers(host, port, timeout=0.3):
        waited = time.monotonic() - start
        if waited >= timeout:
            raise RunnerError(
                f"the SSH server of `{environment.name}` does not answer on {host}:{port} "
                f"after {max(timeout, 0):.0f}s",
                hint=f"see /var/log/envd/sshd.log in it (envd exec --name {environment.name} "
                     "cat /var/log/envd/sshd.log), or raise --timeout")
        if progress is not None and waited - told >= 2.0:
            told = waited
            progress(f"waiting for the SSH server of {environment.name} on {host}:{port} "
                     f"({waited:.0f}s)")
        sleep(0.02)


class Background:
    """``func(*args)`` on a thread; :meth:`result` joins it and re-raises what it raised
    (each time it is asked: ``up`` joins it before its solve and again after the build)."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        import threading

        self._outcome: list[Any] = []
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._outcome.append(func(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                self._error.append(exc)

        self._thread = threading.Thread(target=run, name=f"envd-{func.__name__}", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._outcome[0] if self._outcome else None
