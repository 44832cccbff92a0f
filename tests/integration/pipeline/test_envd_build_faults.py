"""Fault tests that stay (issue 15): a daemon killed or frozen mid-build, a black-hole port, a
TLS mismatch and a read-only config directory each end the real ``envd`` CLI with one line.

Killing and stopping daemons only ever touches the ``disposable_buildkitd`` fixture's private
buildkitd, never the shared infra daemons.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline.test_envd_build_support import ENVD

SLEEPER = "sleeper"


def envd_env(config_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVD_", "BUILDKIT_"))}
    env.update({"ENVD_CONFIG_DIR": str(config_dir), "NO_COLOR": "1", **extra})
    return env


def write_sleeper(directory: Path, image: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{image}", dev=False)\n'
        f'    run(commands=["sleep 600 # {uuid.uuid4().hex}"])\n'
    )
    return directory


def create_context(config_dir: Path, name: str, *args: str) -> None:
    subprocess.run([ENVD, "context", "create", "--name", name, "--use", *args],
                   env=envd_env(config_dir), check=True, capture_output=True, timeout=60)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(("envd:", "hint:"))]
    errors = [line for line in lines if line.startswith("envd:")]
    assert len(errors) == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-2000:]
    return errors[0]


@pytest.fixture
def build_in_flight(disposable_buildkitd: Any, infra: dict[str, Any], tmp_path: Path
                    ) -> Iterator[tuple[subprocess.Popen[str], Any, Path]]:
    """``envd build`` on the disposable daemon, returned once its `sleep 600` step runs."""
    config = tmp_path / "config"
    create_context(config, "disposable", "--builder", "unix", "--builder-address",
                   disposable_buildkitd.address)
    context = write_sleeper(tmp_path / "ctx", infra["IMAGE_BUSYBOX"])
    log = tmp_path / "build.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [ENVD, "build", "-p", str(context), "--progress", "plain",
             "--output", f"type=tar,dest={tmp_path / 'out.tar'}"],
            env=envd_env(config, ENVD_SOLVE_WATCHDOG="idle=5,probe=5"),
            stdout=subprocess.DEVNULL, stderr=out, text=True)
    try:
        deadline = time.monotonic() + 240
        while "sleep 600" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the sleep step never started"
            time.sleep(0.2)
        time.sleep(1)  # the step's process is running inside the daemon now
        yield proc, disposable_buildkitd, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(disposable_buildkitd.pid, signal.SIGCONT)  # the fixture can stop it again
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_buildkitd_sigkilled_mid_build_is_one_line(
        build_in_flight: tuple[subprocess.Popen[str], Any, Path]) -> None:
    proc, daemon, log = build_in_flight
    os.killpg(daemon.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    line = one_line(log.read_text())
    # the cause table's builder-lost row (test_envd_build_failures_link checks its exact lines)
    assert "dropped mid-build" in line, line
    assert "TLS" not in line


def test_buildkitd_sigstopped_mid_build_ends_by_the_watchdog(
        build_in_flight: tuple[subprocess.Popen[str], Any, Path]) -> None:
    proc, daemon, log = build_in_flight
    os.killpg(daemon.pid, signal.SIGSTOP)
    assert proc.wait(timeout=120) == 1  # idle=5 + probe=5 after the last status
    line = one_line(log.read_text())
    assert "stopped answering during the build" in line, line


def test_black_hole_port_times_out_in_one_line(tmp_path: Path) -> None:
    """A port that accepts TCP and never speaks HTTP/2 (a firewall's tarpit, a hung proxy)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # never accept()ed: the kernel completes handshakes, nobody answers
    try:
        config = tmp_path / "config"
        create_context(config, "hole", "--builder", "tcp", "--builder-address",
                       f"127.0.0.1:{hole.getsockname()[1]}")
        context = write_sleeper(tmp_path / "ctx", "127.0.0.1:5000/busybox:latest")
        proc = subprocess.run(
            [ENVD, "build", "-p", str(context), "--output",
             f"type=tar,dest={tmp_path / 'o.tar'}"],
            env=envd_env(config, BUILDKIT_CONNECTING_TIMEOUT="3s"), capture_output=True,
            text=True, timeout=120)
    finally:
        hole.close()
    assert proc.returncode == 1
    assert "did not answer in time" in one_line(proc.stderr)


def test_tls_servername_mismatch_is_a_tls_error(infra: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "config"
    create_context(config, "badname", "--builder", "tcp", "--builder-address",
                   infra["BUILDKIT_MTLS"].removeprefix("tcp://"),
                   "--builder-opt", f"cacert={infra['BUILDKIT_MTLS_CA']}",
                   "--builder-opt", f"cert={infra['BUILDKIT_MTLS_CERT']}",
                   "--builder-opt", f"key={infra['BUILDKIT_MTLS_KEY']}",
                   "--builder-opt", "servername=not-in-the-certificate.example")
    context = write_sleeper(tmp_path / "ctx", infra["IMAGE_BUSYBOX"])
    proc = subprocess.run(
        [ENVD, "build", "-p", str(context), "--output", f"type=tar,dest={tmp_path / 'o.tar'}"],
        env=envd_env(config), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "TLS handshake" in line and "servername" in line, line


def test_read_only_config_dir_as_an_unprivileged_user(infra: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """Root bypasses permissions, so the store is driven as the infra's unprivileged user.

    The child is forked from this interpreter (imports already loaded: the user cannot read
    root's Python installation) and drops to that user before running the CLI in-process.
    """
    from envd_core.plugins import Plugins
    from envd_core.testing import EnvdCli

    user = pwd.getpwnam(infra["ROOTLESS_USER"])
    config = tmp_path / "cfg"
    config.mkdir()
    os.chown(config, user.pw_uid, user.pw_gid)
    config.chmod(0o500)  # read-only for its owner
    tmp_path.chmod(0o755)
    cli = EnvdCli(Plugins.create)  # every installed plugin, as the console script
    warm = {"ENVD_CONFIG_DIR": str(tmp_path / "warm")}  # load every module the commands need
    cli("context", "ls", env=warm)
    cli("context", "create", "--name", "w", "--builder", "tcp", "--builder-address",
        "127.0.0.1:1", env=warm)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, run, report through the pipe
        code = 3
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            result = cli("context", "create", "--name", "x", "--builder", "tcp",
                         "--builder-address", "127.0.0.1:1234",
                         env={"ENVD_CONFIG_DIR": str(config)})
            os.write(write_fd, f"{result.exit_code}\n{result.stderr}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        report = reader.read()
    os.waitpid(pid, 0)
    code, _, output = report.partition("\n")
    assert code == "1", report
    line = one_line(output)
    assert str(config) in line and "Permission denied" in line, line
    assert not any(config.iterdir())  # nothing written, nothing lost
