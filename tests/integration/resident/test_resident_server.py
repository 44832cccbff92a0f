"""The resident process for real: a server spawned by ``envd`` itself, real builds through it.

Each test gets its own socket directory (``ENVD_RESIDENT_DIR``), config and cache dirs, so its
server is its own; every server is stopped at the end of its test. Builds go to the shared
buildkitd over TCP. Costs about 1-3 s of CPU per server start (the imports it does once).
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENVD = str(Path(sys.executable).with_name("envd"))


class Resident:
    """An environment whose ``envd`` runs go through a server of this test's own."""

    def __init__(self, tmp: Path, sockets: Path) -> None:
        self.tmp = tmp
        self.sockets = sockets
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("ENVD_CONTEXT", "ENVD_RESIDENT", "ENVD_RESIDENT_IDLE")}
        self.env.update(ENVD_RESIDENT_DIR=str(sockets), ENVD_CONFIG_DIR=str(tmp / "cfg"),
                        ENVD_CACHE_DIR=str(tmp / "cache"), GRPC_VERBOSITY="NONE")

    def run(self, *args: str, cwd: Path | None = None, **extra: str,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ENVD, *args], env={**self.env, **extra}, cwd=cwd or self.tmp,
                              capture_output=True, text=True, timeout=600, check=False,
                              stdin=subprocess.DEVNULL)

    def status(self) -> dict[str, Any]:
        done = self.run("resident", "status", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def wait_running(self, timeout: float = 120, *, other_than: int | None = None,
                     ) -> dict[str, Any]:
        """Start a server when none runs (any eligible command spawns one) and wait for it."""
        deadline = time.monotonic() + timeout
        self.run("version")
        while time.monotonic() < deadline:
            state = self.status()
            if state["running"] and state["pid"] != other_than:
                return state
            time.sleep(0.2)
        log = self.sockets / "server.log"
        raise AssertionError("no resident server started: "
                             + (log.read_text()[-2000:] if log.exists() else "no log"))

    def using(self, **extra: str) -> Resident:
        """The same directories with ``extra`` variables set."""
        other = Resident(self.tmp, self.sockets)
        other.env = {**self.env, **extra}
        return other

    def log(self) -> str:
        path = self.sockets / "server.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def resident(tmp_path: Path) -> Iterator[Resident]:
    sockets = Path(tempfile.mkdtemp(prefix="envd-rt-", dir="/tmp"))  # AF_UNIX: 107 bytes
    res = Resident(tmp_path, sockets)
    try:
        yield res
    finally:
        res.run("resident", "stop", "--all")
        shutil.rmtree(sockets, ignore_errors=True)


def _project(tmp: Path, registry: str, step: str) -> Path:
    project = tmp / "project"
    project.mkdir(exist_ok=True)
    (project / "build.envd").write_text(
        "# syntax=v1\n\ndef build():\n"
        f'    base(image="{registry}/busybox:latest", dev=False)\n'
        f'    run(commands=["{step}"])\n')
    return project


def _tcp_context(res: Resident, buildkit_tcp: str) -> None:
    done = res.run("context", "create", "--name", "t", "--builder", "tcp", "--builder-address",
                   buildkit_tcp, "--use")
    assert done.returncode == 0, done.stderr


def test_build_through_the_resident_is_the_direct_build(resident: Resident, buildkit_tcp: str,
                                                        registry: str) -> None:
    before = resident.wait_running()["served"]
    _tcp_context(resident, buildkit_tcp)
    project = _project(resident.tmp, registry, f"echo {uuid.uuid4().hex} > /marker")
    image = f"{registry}/envd-test-resident/build:{uuid.uuid4().hex[:8]}"
    digests = []
    for extra in ({}, {"ENVD_RESIDENT": "0"}):
        done = resident.run("build", "--progress", "plain", "--output",
                            f"type=image,name={image},push=true", cwd=project, **extra)
        assert done.returncode == 0, done.stderr[-2000:]
        found = re.search(r"Pushed \S+ \((sha256:[0-9a-f]{64})\)", done.stdout + done.stderr)
        assert found, done.stdout + done.stderr
        digests.append(found.group(1))
    assert digests[0] == digests[1]
    # the context create and the first build went through the server, the second did not
    assert resident.status()["served"] == before + 2


def test_bad_input_is_one_line_and_exit_1(resident: Resident) -> None:
    before = resident.wait_running()["served"]
    done = resident.run("--context", "nope", "build")
    assert done.returncode == 1
    first = 'envd: context "nope" (from --context flag) does not exist'
    assert done.stderr.splitlines()[0] == first
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert resident.status()["served"] == before + 1


def test_the_child_writes_to_the_clients_terminal(resident: Resident, tmp_path: Path) -> None:
    """stdout a pty: the child sees a TTY (build refuses to write a tarball to it)."""
    before = resident.wait_running()["served"]
    (tmp_path / "build.envd").write_text('def build():\n    base(image="x", dev=False)\n')
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([ENVD, "build", "--output", "type=tar"], env=resident.env,
                              cwd=tmp_path, stdout=secondary, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=120, check=False)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode != 0
    assert "refusing to write to console" in proc.stderr
    assert resident.status()["served"] == before + 1


def _long_build(res: Resident, registry: str, buildkit_tcp: str,
                ) -> tuple[subprocess.Popen[str], list[str]]:
    _tcp_context(res, buildkit_tcp)
    step = f"sleep 300 && echo {uuid.uuid4().hex}"
    project = _project(res.tmp, registry, step)
    proc = subprocess.Popen([ENVD, "build", "--progress", "plain", "--output",
                             f"type=tar,dest={res.tmp / 'out.tar'}"], cwd=project, env=res.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if "sleep 300" in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    assert started.wait(300), "\n".join(seen[-30:])
    time.sleep(1.0)  # the step runs inside the daemon
    return proc, seen


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return True
    return state == b"Z"


def test_ctrl_c_cancels_a_build_in_the_resident(resident: Resident, registry: str,
                                                buildkit_tcp: str, buildctl: str) -> None:
    resident.wait_running()
    proc, seen = _long_build(resident, registry, buildkit_tcp)
    child = resident.status()["children"]
    assert len(child) == 1
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)  # the reader thread takes the last lines
    assert code != 0
    assert not any("Traceback" in line for line in seen), "\n".join(seen[-20:])
    assert _gone(child[0])
    # the daemon keeps working, and so does the server
    done = subprocess.run([buildctl, "--addr", buildkit_tcp, "debug", "workers"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert resident.status()["commands_running"] == 0


def test_a_killed_client_stops_its_command(resident: Resident, registry: str,
                                           buildkit_tcp: str) -> None:
    resident.wait_running()
    proc, _seen = _long_build(resident, registry, buildkit_tcp)
    child = resident.status()["children"]
    assert len(child) == 1
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while not _gone(child[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(child[0]), "the command outlived its client by a minute"
    assert "went away" in resident.log()


def test_each_invocation_has_its_own_environment_and_directory(resident: Resident,
                                                               tmp_path: Path) -> None:
    """Two config dirs back to back through one server: each command wrote its own; a
    relative path is the client's working directory."""
    resident.wait_running()
    for name in ("one", "two"):
        done = resident.run("context", "create", "--name", name, "--builder", "tcp",
                            "--builder-address", "127.0.0.1:1",
                            ENVD_CONFIG_DIR=str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    for name, other in (("one", "two"), ("two", "one")):
        done = resident.run("context", "ls", "--format", "json", ENVD_RESIDENT="0",
                            ENVD_CONFIG_DIR=str(tmp_path / name))
        names = {c["context"] for c in json.loads(done.stdout)}
        assert name in names and other not in names
    work = tmp_path / "work"
    work.mkdir()
    (work / "build.envd").write_text('def build():\n    base(image="busybox", dev=False)\n')
    done = resident.run("build", "--dump-llb", "out.llb", cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out.llb").stat().st_size > 0
    assert resident.status()["served"] >= 3


def test_an_edited_module_sends_the_next_command_to_a_fresh_server(resident: Resident,
                                                                   tmp_path: Path) -> None:
    """A plugin installed editable (a module outside site-packages) is edited: the server
    declines, the command runs directly, and a fresh server serves the next ones."""
    site = tmp_path / "site"
    site.mkdir()
    module = site / "envd_resident_throwaway.py"
    module.write_text("VALUE = 1\n")
    info = site / "envd_resident_throwaway-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: envd-resident-throwaway\n"
                                   "Version: 1.0\n\n")
    (info / "entry_points.txt").write_text("[envd]\nthrowaway = envd_resident_throwaway\n")
    res = resident.using(PYTHONPATH=str(site))
    first = res.wait_running()
    assert res.run("version").returncode == 0
    assert res.status()["served"] == first["served"] + 1
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    done = res.run("version")  # declined: runs here, output unchanged
    assert done.returncode == 0 and done.stdout.startswith("envd: ")
    assert f"changed on disk: {module}" in res.log()
    second = res.wait_running(other_than=first["pid"])
    assert second["pid"] != first["pid"]
    assert res.run("version").returncode == 0
    assert res.status()["served"] >= 1
    assert _wait_gone(first["pid"])


def _wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _gone(pid)


def test_disabled_starts_no_server(resident: Resident) -> None:
    done = resident.run("version", ENVD_RESIDENT="0")
    assert done.returncode == 0
    time.sleep(2)
    assert not list(resident.sockets.glob("*.sock"))
    assert resident.status()["running"] is False


def test_idle_server_exits(resident: Resident) -> None:
    state = resident.using(ENVD_RESIDENT_IDLE="4").wait_running()
    assert state["idle_timeout"] == 4
    assert _wait_gone(state["pid"], timeout=60)
    assert not list(resident.sockets.glob("resident-*"))  # neither its socket nor lock file
    assert "idle for 4 s" in resident.log()


def test_racing_spawns_end_with_one_server(resident: Resident) -> None:
    procs = [subprocess.Popen([ENVD, "version"], env=resident.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    state = resident.wait_running()
    time.sleep(3)  # the losers, if any, are gone by now
    assert resident.log().count("serving ") == 1
    assert len(list(resident.sockets.glob("*.sock"))) == 1
    assert resident.status()["pid"] == state["pid"]
