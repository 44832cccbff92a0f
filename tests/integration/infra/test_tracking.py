"""The infra's process bookkeeping (``envd_infra.processes``), exercised on harmless processes.

These need no running infra: the package is imported with ENVD_INFRA_DIR pointing at a temporary
directory (the ``envd_infra`` fixture) and starts ``sleep`` instead of a daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "infra"


def test_state_dir_comes_from_the_environment(envd_infra: ModuleType, tmp_path: Path) -> None:
    assert tmp_path / "state" / "pids" == envd_infra.config.PIDS
    assert envd_infra.config.REGISTRY == "127.0.0.1:5000"


def test_started_process_is_tracked_and_stopped(envd_infra: ModuleType) -> None:
    proc = envd_infra.processes
    pid = proc.start_daemon("sleeper", ["sleep", "600"], lambda: True)
    assert proc.tracked("sleeper") == pid
    assert proc.stop("sleeper") is True
    assert proc.tracked("sleeper") is None
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_recycled_pid_is_never_killed(envd_infra: ModuleType) -> None:
    proc = envd_infra.processes
    victim = subprocess.Popen(["sleep", "600"])
    try:
        envd_infra.config.PIDS.mkdir(parents=True)
        # A pid file naming a live process with a different start time: not ours any more.
        (envd_infra.config.PIDS / "ghost.json").write_text(json.dumps(
            {"pid": victim.pid, "start": "1", "argv": ["dockerd"]}))
        assert proc.tracked("ghost") is None
        assert proc.stop("ghost") is False
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_daemon_that_dies_while_starting_reports_its_log(envd_infra: ModuleType) -> None:
    proc = envd_infra.processes
    with pytest.raises(envd_infra.shell.InfraError) as err:
        proc.start_daemon("broken", ["sh", "-c", "echo no-such-config >&2; exit 3"],
                          lambda: False)
    assert "exited with 3" in str(err.value)
    assert "no-such-config" in envd_infra.shell.tail(err.value.log)
    assert proc.tracked("broken") is None


def test_daemon_that_never_gets_ready_is_killed(envd_infra: ModuleType) -> None:
    with pytest.raises(envd_infra.shell.InfraError, match="did not become ready"):
        envd_infra.processes.start_daemon("stuck", ["sleep", "600"], lambda: False, timeout=0.5)
    assert not list(envd_infra.config.PIDS.glob("stuck.json"))


def test_replaced_binary_is_noticed(envd_infra: ModuleType, tmp_path: Path) -> None:
    # What `up` sees after rebuilding buildkitd under a running daemon: restart it.
    binary = tmp_path / "sleepy"
    binary.write_bytes(Path("/bin/sleep").read_bytes())
    binary.chmod(0o755)
    proc = envd_infra.processes
    pid = proc.start_daemon("sleepy", [str(binary), "600"], lambda: True)
    assert proc.executable_replaced(pid) is False
    fresh = tmp_path / "sleepy.new"
    fresh.write_bytes(binary.read_bytes())
    os.replace(fresh, binary)
    assert proc.executable_replaced(pid) is True


def test_usage_error_exit_code() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "frobnicate"], capture_output=True,
                          text=True, env={**os.environ}, check=False)
    assert proc.returncode == 2
    assert "up [--skip-upstream]" in proc.stderr


def test_unknown_flag_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "status", "--jsn"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "infra: `status` does not take `--jsn`"
    assert "Traceback" not in proc.stderr


def test_status_of_a_fresh_state_dir_says_down(tmp_path: Path) -> None:
    # No certificates yet: the auth registry probe must report "down", not crash.
    env = {**os.environ, "ENVD_INFRA_DIR": str(tmp_path / "fresh"),
           "ENVD_INFRA_PORT_OFFSET": "17"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "status", "--json"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 3, proc.stderr
    status = json.loads(proc.stdout)
    assert status["auth-registry"] == "down"
    assert status["buildkitd"] == "down"


def test_a_second_instance_names_its_images_apart(tmp_path: Path) -> None:
    # dockerd is shared: an isolated instance must not retag the shared instance's images.
    def env_json(offset: str) -> dict[str, str]:
        env = {**os.environ, "ENVD_INFRA_DIR": str(tmp_path / offset),
               "ENVD_INFRA_PORT_OFFSET": offset}
        out = subprocess.run([sys.executable, str(SCRIPT), "env", "--json"], env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        loaded: dict[str, str] = json.loads(out)
        return loaded

    shared, second = env_json("0"), env_json("100")
    assert shared["BUILDKIT_IMAGE"] == "envd-buildkit:v0.18.2"
    for key in ("BUILDKIT_IMAGE", "BUILDKIT_IMAGE_REF", "IMAGE_DEBIAN", "IMAGE_BUSYBOX",
                "IMAGE_PYTHON", "IMAGE_PYTHON_HOSTCA"):
        assert shared[key] != second[key], key
