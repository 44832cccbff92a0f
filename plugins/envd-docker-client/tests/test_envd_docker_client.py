"""Unit tests of envd-docker-client: host selection, one-line errors, the hand-written upgrade."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from envd_docker_client.client import DockerHostError, docker_host, open_client
from envd_docker_client.upgrade import dial_docker_upgrade

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.buildkit.transport import connect_bridge
from envd_core.errors import BuilderError, RunnerError


def test_docker_host_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker_host() == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    assert docker_host() == "tcp://10.0.0.1:2375"
    assert docker_host("unix:///other.sock") == "unix:///other.sock"


def test_unreachable_daemon_is_one_line_of_the_asked_kind(tmp_path: Path) -> None:
    with pytest.raises(BuilderError) as info:
        open_client(f"unix://{tmp_path}/none.sock", error=BuilderError)
    assert str(info.value) == (
        f"cannot reach the Docker daemon at `unix://{tmp_path}/none.sock`: "
        "No such file or directory"
    )
    assert info.value.hint == "start dockerd or set DOCKER_HOST"


def test_bad_host_is_refused_before_any_connection() -> None:
    with pytest.raises(DockerHostError, match="unsupported Docker host `http://x`"):
        open_client("http://x")


def test_tls_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """DOCKER_TLS_VERIFY/DOCKER_CERT_PATH are read as docker.from_env reads them; bad ones are
    one line, not a traceback."""
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))  # no certificates there
    with pytest.raises(RunnerError) as info:
        open_client("tcp://127.0.0.1:1")
    assert str(info.value).startswith(
        f"cannot use the Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH=`{tmp_path}`)")
    assert "\n" not in str(info.value)
    # a unix socket never uses TLS, so the same environment does not get in its way
    with pytest.raises(RunnerError, match="No such file or directory"):
        open_client(f"unix://{tmp_path}/none.sock")


def test_importing_the_package_imports_no_docker() -> None:
    code = ("import sys, envd_docker_client, envd_docker_client.client, envd_docker_client.images,"
            " envd_docker_client.exec, envd_docker_client.upgrade;"
            " print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'requests')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": ""})
    assert out.stdout.strip() == "[]"


@pytest.fixture
def http1_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_upgrade_refused_by_a_plain_http_server(http1_server: int) -> None:
    dial = dial_docker_upgrade(f"tcp://127.0.0.1:{http1_server}")
    with pytest.raises(BuildkitConnectionError) as info:
        dial()
    assert info.value.kind == "not-buildkit"
    assert "HTTP/1.0 200" in str(info.value) and "`/grpc`" in str(info.value)


def test_bridge_over_a_refused_upgrade_leaves_nothing(http1_server: int) -> None:
    before = set(os.listdir("/tmp"))
    with pytest.raises(BuildkitConnectionError) as info:
        connect_bridge(dial_docker_upgrade(f"tcp://127.0.0.1:{http1_server}"), target="docker",
                       timeout=2)
    assert info.value.kind == "not-buildkit"
    assert not [t for t in threading.enumerate() if t.name.startswith("envd-bk-bridge")]
    assert {p for p in set(os.listdir("/tmp")) - before if p.startswith("envd-bk-")} == set()


def test_upgrade_to_a_missing_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildkitConnectionError) as info:
        dial_docker_upgrade(f"unix://{tmp_path}/none.sock")()
    assert info.value.kind == "refused"


def _frame(stream_id: int, data: bytes) -> bytes:
    import struct

    return struct.pack(">BxxxL", stream_id, len(data)) + data


def test_exec_stream_demultiplexes_frames() -> None:
    """Docker's 8-byte-header frames split into stdout/stderr, even when split mid-header."""
    import socket as socketlib

    from envd_docker_client.exec import ExecStream

    ours, theirs = socketlib.socketpair()
    wire = _frame(1, b"out-1\n") + _frame(2, b"err\n") + _frame(1, b"x" * 100_000)
    sender = threading.Thread(target=lambda: (theirs.sendall(wire[:3]), theirs.sendall(wire[3:]),
                                              theirs.close()))
    sender.start()
    frames = list(ExecStream(ours, tty=False).frames())
    sender.join()
    assert [(sid, len(data)) for sid, data in frames] == [(1, 6), (2, 4), (1, 100_000)]
    assert frames[0][1] == b"out-1\n" and frames[1][1] == b"err\n"


def test_exec_stream_as_byte_stream_keeps_only_stdout() -> None:
    """For the BuildKit bridge: recv() returns stdout bytes in order; stderr never leaks in."""
    import socket as socketlib

    from envd_docker_client.exec import ExecStream

    ours, theirs = socketlib.socketpair()
    theirs.sendall(_frame(2, b"noise") + _frame(1, b"abc") + _frame(1, b"def"))
    theirs.close()
    stream = ExecStream(ours, tty=False)
    got = b""
    while chunk := stream.recv(2):
        got += chunk
    assert got == b"abcdef"
    stream.close()


def test_exec_stream_with_tty_is_raw() -> None:
    import socket as socketlib

    from envd_docker_client.exec import ExecStream

    ours, theirs = socketlib.socketpair()
    theirs.sendall(b"\x01\x00raw bytes")
    theirs.close()
    assert b"".join(d for _, d in ExecStream(ours, tty=True).frames()) == b"\x01\x00raw bytes"
