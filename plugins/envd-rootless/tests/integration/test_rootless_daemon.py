"""The rootless builder for real: envd run as the infra's unprivileged user, no Docker access.

The test installs envd (core + this plugin, editable) into a venv of the system Python that
the unprivileged user can read, then runs ``envd`` through ``su``. It proves the seed scenario
(create, use, build with push=true, pull and run the image as root), that every daemon process
has the user's uid on the host, that status/remove work, and that ``ephemeral`` leaves nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def user_venv(infra: dict[str, Any]) -> Iterator[str]:
    """A venv the unprivileged user can run (the test runner's own lives under /root)."""
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None or shutil.which("rootlesskit") is None:
        pytest.skip("needs the system python3 and rootlesskit")
    venv = tempfile.mkdtemp(prefix="envd-h7-rlvenv-", dir="/tmp")
    try:
        subprocess.run([python, "-m", "venv", venv], check=True, timeout=120)
        subprocess.run([f"{venv}/bin/pip", "install", "-q", "-e", str(REPO), "-e",
                        str(REPO / "plugins" / "envd-rootless"), "-e",
                        str(REPO / "plugins" / "envd-docker-client"), "-e",
                        str(REPO / "plugins" / "envd-docker-runner")],
                       check=True, timeout=900, capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", venv], check=True)
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


class AsUser:
    """Runs commands as the infra's unprivileged user with private XDG and envd dirs."""

    def __init__(self, user: str, venv: str) -> None:
        self.user = user
        self.uid = pwd.getpwnam(user).pw_uid
        self.venv = venv
        self.home = Path(tempfile.mkdtemp(prefix="envd-h7-rlhome-", dir="/tmp"))
        os.chown(self.home, self.uid, pwd.getpwnam(user).pw_gid)
        self.env = {
            "HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_DATA_HOME": str(self.home / "data"), "XDG_STATE_HOME": str(self.home / "state"),
            "ENVD_CONFIG_DIR": str(self.home / "config"), "NO_COLOR": "1",
            "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        }

    def sh(self, script: str, *, check: bool = True, cwd: str = "/tmp",
           ) -> subprocess.CompletedProcess[str]:
        exports = " ".join(f"{k}='{v}'" for k, v in self.env.items())
        proc = subprocess.run(["su", self.user, "-s", "/bin/sh", "-c",
                               f"cd {cwd} && export {exports} && {script}"],
                              capture_output=True, text=True, timeout=600, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"as {self.user}: {script}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def envd(self, *args: str, check: bool = True, cwd: str = "/tmp",
             ) -> subprocess.CompletedProcess[str]:
        quoted = " ".join(f"'{a}'" for a in args)
        return self.sh(f"envd {quoted}", check=check, cwd=cwd)

    def daemon_pids(self, name: str) -> list[int]:
        """Host pids of every process of daemon ``name`` (matched by its socket path; an empty
        name matches every daemon under this user's runtime dir)."""
        suffix = f"{name}.sock" if name else ""
        needle = f"{self.env['XDG_RUNTIME_DIR']}/buildkit/{suffix}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids


@pytest.fixture
def user(infra: dict[str, Any], user_venv: str) -> Iterator[AsUser]:
    runner = AsUser(infra["ROOTLESS_USER"], user_venv)
    yield runner
    for pid in runner.daemon_pids(""):  # anything still running from this home: stop it
        subprocess.run(["kill", "-9", str(pid)], check=False)
    subprocess.run(["su", runner.user, "-s", "/bin/sh", "-c",
                    f"rootlesskit --net=host rm -rf {runner.home}/data"], check=False,
                   capture_output=True, timeout=120)
    shutil.rmtree(runner.home, ignore_errors=True)


def _project(user: AsUser, mark: str, busybox: str) -> str:
    project = user.home / "project"
    project.mkdir()
    (project / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{busybox}")\n'
        f'    run(commands=["echo {mark} > /marker", "id -u > /uid-in-build"])\n')
    subprocess.run(["chown", "-R", f"{user.uid}", str(project)], check=True)
    return str(project)


def test_seed_scenario_as_unprivileged_user(user: AsUser, infra: dict[str, Any]) -> None:
    assert user.sh("test -w /var/run/docker.sock", check=False).returncode != 0, \
        "the unprivileged user must not be able to use dockerd"
    name = f"envd-h7-{uuid.uuid4().hex[:8]}"
    mark = uuid.uuid4().hex[:12]
    image = f"{infra['REGISTRY']}/envd-h7-rootless/{mark}:latest"
    project = _project(user, mark, infra["IMAGE_BUSYBOX"])
    user.envd("context", "create", "--name", "rl", "--builder", "rootless", "--builder-address",
              name, "--builder-opt", f"buildkitd={infra['BUILDKITD']}", "--use")
    stopped = json.loads(user.envd("context", "ls", "--status", "--format", "json").stdout)
    status = next(r for r in stopped if r["context"] == "rl")["status"]
    assert status["reachable"] is False and status["error_kind"] == "not-found"
    try:
        built = user.envd("build", "--progress", "plain", "--output",
                          f"type=image,name={image},push=true", cwd=project)
        assert "BuildKit is running at unix://" in built.stderr and "rootless" in built.stderr
        # Every daemon process is the user's on the host (root only inside its namespace).
        pids = user.daemon_pids(name)
        assert len(pids) >= 2, pids  # rootlesskit, its child, buildkitd
        for pid in pids:
            uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("Uid:")).split()[1:]
            assert set(uids) == {str(user.uid)}, (pid, uids)
        rows = json.loads(user.envd("context", "ls", "--status", "--format", "json").stdout)
        running = next(r for r in rows if r["context"] == "rl")["status"]
        assert running["reachable"] is True and running["workers"] == 1
        # The image came out of the registry, as root, with what the build wrote.
        subprocess.run(["docker", "pull", "-q", image], check=True, capture_output=True)
        out = subprocess.run(["docker", "run", "--rm", image, "cat", "/marker", "/uid-in-build"],
                             check=True, capture_output=True, text=True).stdout.split()
        assert out == [mark, "0"]
        # A second build reuses the daemon: same pids.
        user.envd("build", "--output", f"type=image,name={image},push=true", cwd=project)
        assert sorted(user.daemon_pids(name)) == sorted(pids)
    finally:
        user.envd("builder", "rm", check=False)
        subprocess.run(["docker", "rmi", "-f", image], check=False, capture_output=True)
    assert user.daemon_pids(name) == []
    assert not (user.home / "data" / "envd" / "rootless" / name).exists()


def test_ephemeral_daemon_stops_with_the_command(user: AsUser, infra: dict[str, Any]) -> None:
    name = f"envd-h7-{uuid.uuid4().hex[:8]}"
    project = _project(user, "eph", infra["IMAGE_BUSYBOX"])
    user.envd("context", "create", "--name", "ci", "--builder", "rootless", "--builder-address",
              name, "--builder-opt", f"buildkitd={infra['BUILDKITD']}", "--builder-opt",
              "ephemeral=true", "--use")
    out = user.home / "out"
    built = user.envd("build", "--output", f"type=local,dest={out}", cwd=project)
    assert "stopping rootless BuildKit" in built.stderr
    assert (out / "marker").read_text() == "eph\n"
    assert user.daemon_pids(name) == []


def test_as_root_it_is_one_line(tmp_path: Path, infra: dict[str, Any]) -> None:
    if os.geteuid() != 0:
        pytest.skip("checks the refusal as root")
    envd = str(Path(sys.executable).with_name("envd"))
    # the session's resident directory and idle stay: with XDG_RUNTIME_DIR moved, a resident
    # server would otherwise start in this test's folder and outlive the suite by 15 minutes
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENVD_") or k.startswith("ENVD_RESIDENT")}
    env.update(ENVD_CONFIG_DIR=str(tmp_path / "c"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    subprocess.run([envd, "context", "create", "--name", "rl", "--builder", "rootless",
                    "--use"], env=env, check=True, capture_output=True)
    busybox = infra["IMAGE_BUSYBOX"]
    (tmp_path / "build.envd").write_text(f'def build():\n    base(image="{busybox}")\n')
    proc = subprocess.run([envd, "build", "--output", f"type=local,dest={tmp_path / 'o'}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("envd: ")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "running as root" in lines[0] and "Traceback" not in proc.stderr
