"""``wait_ssh``: ``up`` waits for a real SSH greeting, not for an open port."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from envd_core.environment import Endpoint, Environment, EnvironmentStatus
from envd_core.environments.operations import wait_ssh
from envd_core.errors import RunnerError


def _environment(port: int) -> Environment:
    return Environment(name="p", image="p:dev", status=EnvironmentStatus.RUNNING,
                       runner="docker", id="x", ssh=Endpoint("127.0.0.1", port))


def _server(greet_after: float) -> tuple[socket.socket, int]:
    """A listener that, like Docker's port proxy before sshd is up, accepts and stays silent
    until ``greet_after`` seconds have passed; then it greets like an SSH server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    start = time.monotonic()

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        with conn:
            if time.monotonic() - start >= greet_after:
                conn.sendall(b"SSH-2.0-Go\r\n")
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_waits_until_the_server_greets_and_reports_progress() -> None:
    sock, port = _server(greet_after=2.5)
    lines: list[str] = []
    try:
        t = time.monotonic()
        wait_ssh(_environment(port), 20, lines.append)
        assert time.monotonic() - t >= 2.0
    finally:
        sock.close()
    assert lines and f"127.0.0.1:{port}" in lines[0]


def test_a_silent_port_times_out_in_one_line_naming_the_log() -> None:
    sock, port = _server(greet_after=3600)
    try:
        with pytest.raises(RunnerError) as err:
            wait_ssh(_environment(port), 1.0)
    finally:
        sock.close()
    assert "does not answer" in str(err.value)
    assert "/var/log/envd/sshd.log" in (err.value.hint or "")
