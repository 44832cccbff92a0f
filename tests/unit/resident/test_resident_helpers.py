"""Plugins' helper processes in the socket directory: listed by `envd resident status`,
stopped by `envd resident stop --all` (envd_core/resident/helpers.py)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from envd_core.resident import helpers


def fake_helper(directory: str, requests: list[dict[str, object]]) -> threading.Thread:
    """A helper in this process: registered, answering `status` and `stop` on its socket."""
    sock = os.path.join(directory, "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(4)
    listener.settimeout(10)
    Path(directory, f"fake{helpers.SUFFIX}").write_text(json.dumps({
        "kind": "fake helper", "pid": os.getpid(), "socket": sock, "address": "x://y",
        "started": time.time()}))

    def serve() -> None:
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    request = json.loads(conn.recv(4096))
                    requests.append(request)
                    answer = {"stopping": os.getpid()} if request["op"] == "stop" else {"ok": 1}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                    if request["op"] == "stop":
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def sockdir(monkeypatch: pytest.MonkeyPatch) -> str:
    directory = tempfile.mkdtemp(prefix="envd-h-", dir="/tmp")
    monkeypatch.setenv("ENVD_RESIDENT_DIR", directory)
    return directory


def test_helpers_are_listed_and_stopped(sockdir: str) -> None:
    from envd_core.cli.app import create_cli

    requests: list[dict[str, object]] = []
    thread = fake_helper(sockdir, requests)
    # a registration whose process is gone, and a file that is not one, are not listed
    Path(sockdir, f"dead{helpers.SUFFIX}").write_text(json.dumps({"pid": 2 ** 22 + 7}))
    Path(sockdir, f"junk{helpers.SUFFIX}").write_text("{")
    [info] = helpers.registered(sockdir)
    assert info["kind"] == "fake helper"

    result = CliRunner().invoke(create_cli(), ["resident", "status", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [h["kind"] for h in json.loads(result.output)["helpers"]] == ["fake helper"]
    result = CliRunner().invoke(create_cli(), ["resident", "status"])
    assert f"helper: fake helper pid {os.getpid()} for x://y" in result.output

    assert helpers.ask(str(info["socket"]), {"op": "status"}, timeout=5) == {"ok": 1}
    assert helpers.stop_all(sockdir, wait=0, kind="other kind") == []
    assert helpers.stop_all(sockdir, wait=0) == [os.getpid()]
    thread.join(5)
    assert [r["op"] for r in requests] == ["status", "stop"]
    assert helpers.ask(os.path.join(sockdir, "none.sock"), {"op": "status"}, timeout=1) is None
