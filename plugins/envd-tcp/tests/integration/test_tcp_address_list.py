"""A tcp context listing several daemons builds on the first that answers (real buildkitd)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from envd_tcp import TcpBuilder

from envd_core.buildkit.client import probe


def test_first_answering_daemon_is_used(infra: dict[str, Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    live = str(infra["BUILDKIT_TCP"]).removeprefix("tcp://")
    builder = TcpBuilder(TcpBuilder.normalize_address(f"{dead},{live}"))
    conn = builder.connect(timeout=10)
    try:
        assert probe(conn, timeout=10)["version"] == "v0.18.2"
        assert conn.target == f"tcp://{live}"
    finally:
        conn.close()
    err = capsys.readouterr().err
    assert f"envd: notice: building on tcp://{live}; skipped {dead}: " in err

    # The live one first: nothing is skipped, nothing is said.
    builder = TcpBuilder(TcpBuilder.normalize_address(f"{live},{dead}"))
    builder.connect(timeout=10).close()
    assert "notice" not in capsys.readouterr().err
