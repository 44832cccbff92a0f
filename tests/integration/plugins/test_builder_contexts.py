"""The builder plugins against the real daemons, driven through the `envd` command.

`envd context ls --status`, `envd context inspect` and the cache commands on tcp, unix, mutual
TLS and moby-worker contexts, and the failure classes a user sees for broken ones.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ENVD = shutil.which("envd", path=os.path.dirname(sys.executable)) or "envd"


@pytest.fixture
def envd(tmp_path: Path, docker_host: str):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
    env["ENVD_CONFIG_DIR"] = str(tmp_path / "config")
    env["DOCKER_HOST"] = docker_host

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([ENVD, *args], capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"envd {' '.join(args)} failed: {proc.stderr}")
        return proc

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_of_every_working_builder(envd, buildkit_tcp, buildkit_unix, buildkit_mtls) -> None:  # type: ignore[no-untyped-def]
    m = buildkit_mtls
    envd("context", "create", "--name", "tcp", "--builder", "tcp",
         "--builder-address", buildkit_tcp)
    envd("context", "create", "--name", "unix", "--builder", "unix",
         "--builder-address", buildkit_unix)
    envd("context", "create", "--name", "mtls", "--builder", "tcp", "--builder-address",
         m.address, "--builder-opt", f"cacert={m.ca}", "--builder-opt", f"cert={m.cert}",
         "--builder-opt", f"key={m.key}", "--builder-opt", f"servername={m.servername}")
    rows = json.loads(envd("context", "ls", "--status", "--format", "json").stdout)
    by_name = {row["context"]: row for row in rows}
    assert set(by_name) == {"default", "tcp", "unix", "mtls"}
    for name in ("default", "tcp", "unix", "mtls"):
        status = by_name[name]["status"]
        assert status["reachable"] is True, (name, status)
        assert "linux/amd64" in status["platforms"]
        assert status["latency_ms"] > 0
        assert status["error"] is None
    assert by_name["default"]["status"]["version"].startswith("dockerd ")
    assert by_name["tcp"]["status"]["version"]  # buildkitd >= 0.11 answers Info
    table = envd("context", "ls", "--status").stdout
    assert table.splitlines()[0].split()[-1] == "STATUS"
    assert table.count("running") == 4


def test_broken_builders_are_classified(envd, buildkit_mtls) -> None:  # type: ignore[no-untyped-def]
    m = buildkit_mtls
    envd("context", "create", "--name", "refused", "--builder", "tcp",
         "--builder-address", f"127.0.0.1:{_free_port()}")
    envd("context", "create", "--name", "bad-ca", "--builder", "tcp", "--builder-address",
         m.address, "--builder-opt", f"cacert={m.bad_ca}", "--builder-opt", f"cert={m.cert}",
         "--builder-opt", f"key={m.key}", "--builder-opt", f"servername={m.servername}")
    envd("context", "create", "--name", "no-client-cert", "--builder", "tcp", "--builder-address",
         m.address, "--builder-opt", f"cacert={m.ca}", "--builder-opt",
         f"servername={m.servername}")
    envd("context", "create", "--name", "missing-socket", "--builder", "unix",
         "--builder-address", "/nonexistent/buildkitd.sock")
    rows = json.loads(envd("context", "ls", "--status", "--timeout", "3", "-f", "json").stdout)
    status = {row["context"]: row["status"] for row in rows}
    assert status["refused"]["error_kind"] == "refused"
    assert status["missing-socket"]["error_kind"] == "refused"
    assert status["bad-ca"]["error_kind"] == "tls"
    assert status["no-client-cert"]["error_kind"] == "tls"
    for name in ("refused", "bad-ca", "no-client-cert", "missing-socket"):
        assert status[name]["reachable"] is False
        assert status[name]["error"]
    # the same failure when the context is used: one line, exit 1, no traceback
    proc = envd("--context", "bad-ca", "disk-usage", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("envd: ")
    assert "Traceback" not in proc.stderr
    assert "TLS" in proc.stderr or "tls" in proc.stderr


def test_inspect_includes_status(envd, buildkit_unix) -> None:  # type: ignore[no-untyped-def]
    envd("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
         buildkit_unix, "--use")
    data = json.loads(envd("context", "inspect", "u").stdout)
    assert data["builder"] == "unix"
    assert data["current"] is True
    status: dict[str, Any] = data["status"]
    assert {"reachable", "version", "platforms", "latency_ms", "error"} <= set(status)
    assert status["reachable"] is True


def test_disk_usage_and_prune_on_context_in_force(envd, buildkit_unix) -> None:  # type: ignore[no-untyped-def]
    envd("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
         buildkit_unix)
    records = json.loads(envd("--context", "u", "disk-usage", "--format", "json").stdout)
    assert isinstance(records, list)
    for record in records:
        assert {"id", "size", "in_use"} <= set(record)
    proc = envd("--context", "u", "prune", "--keep-duration", "240h")
    assert "Total reclaimed" in proc.stdout
    # the moby-worker default context has a cache too
    assert "Total:" in envd("disk-usage").stdout


def test_not_buildkit_and_dns_are_classified(envd, registry) -> None:  # type: ignore[no-untyped-def]
    # the plain registry is an HTTP/1 server: it answers, but it is not BuildKit
    envd("context", "create", "--name", "registry", "--builder", "tcp",
         "--builder-address", registry)
    envd("context", "create", "--name", "nxdomain", "--builder", "tcp",
         "--builder-address", "no-such-host.invalid:1234")
    rows = json.loads(envd("context", "ls", "--status", "--timeout", "3", "-f", "json").stdout)
    status = {row["context"]: row["status"] for row in rows}
    assert status["registry"]["error_kind"] == "not-buildkit", status["registry"]
    assert status["nxdomain"]["error_kind"] == "dns", status["nxdomain"]
