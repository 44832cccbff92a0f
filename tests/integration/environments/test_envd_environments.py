"""``envd up/run/envs/exec/down`` against the real dockerd, through the docker runner.

Every test runs the real ``envd`` console script with a private HOME (so ``~/.ssh/config`` is
a temp file seeded with a user's own entry) and a private ``ENVD_CONFIG_DIR`` (default context:
moby-worker builder, docker runner). Containers and images are named ``envd-h8-…`` and removed
after each test, also when it fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ENVD = str(Path(sys.executable).with_name("envd"))
USER_SSH = b"# mine\nHost work\n  HostName work.example.org\n  User me\n"


class Envd:
    """The envd CLI with a private HOME and config dir, against the infra's dockerd."""

    def __init__(self, home: Path, docker_host: str) -> None:
        self.home = home
        self.docker_host = docker_host

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ENVD_") and k not in ("BUILDKIT_PROGRESS", "XDG_CONFIG_HOME")}
        env.update(HOME=str(self.home), ENVD_CONFIG_DIR=str(self.home / "envd-config"),
                   DOCKER_HOST=self.docker_host, NO_COLOR="1")
        return env

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([ENVD, *args], cwd=cwd, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"envd {' '.join(args)} exited {proc.returncode}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    @property
    def ssh_config(self) -> bytes:
        return (self.home / ".ssh" / "config").read_bytes()


def docker(*args: str, docker_host: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], env=dict(os.environ, DOCKER_HOST=docker_host),
                          capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # build progress may come first; the error itself is one `envd:` line (+ a hint)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("envd:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith(("envd:", "hint:"))
    return lines[0]


def write_project(directory: Path, registry: str, *, expose: str = "") -> Path:
    directory.mkdir(parents=True)
    (directory / "marker.txt").write_text(f"marker {directory.name}\n")
    (directory / "build.envd").write_text(
        "# syntax=v1\n"
        "def build():\n"
        f'    base(image="{registry}/busybox:latest", dev=False)\n'
        '    runtime.environ(env={"H8_ENV": "from-build"})\n'
        '    runtime.command(commands={"greet": "echo greet-$H8_ENV"})\n'
        + (f"    {expose}\n" if expose else "")
    )
    return directory


@pytest.fixture
def envd(tmp_path: Path, docker_host: str) -> Iterator[Envd]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_bytes(USER_SSH)
    cli = Envd(home, docker_host)
    yield cli
    # clean up whatever the test created, also after a failure
    names = docker("ps", "-aq", "--filter", "name=envd-h8-", docker_host=docker_host).stdout
    ours = [n for n in names.split() if n]
    for cid in ours:
        labels = docker("inspect", "--format", "{{json .Config.Labels}}", cid,
                        docker_host=docker_host, check=False).stdout
        if str(tmp_path.name) in labels or "envd-h8-" in labels:
            docker("rm", "-f", cid, docker_host=docker_host, check=False)


@pytest.fixture
def project(tmp_path: Path, registry: str, docker_host: str) -> Iterator[Path]:
    name = f"envd-h8-{uuid.uuid4().hex[:8]}"
    yield write_project(tmp_path / name, registry)
    docker("rm", "-f", name, docker_host=docker_host, check=False)
    docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)


def test_up_ls_exec_down(envd: Envd, project: Path, docker_host: str) -> None:
    name = project.name
    up = envd("up", "--detach", "--progress", "plain", cwd=project)
    assert f"Environment {name} is running" in up.stderr

    rows = json.loads(envd("envs", "ls", "--format", "json").stdout)
    ours = {r["name"]: r for r in rows}
    ps = docker("ps", "--filter", "label=ai.tensorchord.envd.name", "--format",
                "{{.Names}} {{.Image}} {{.State}}", docker_host=docker_host).stdout.split("\n")
    running = {line.split()[0]: line.split()[1:] for line in ps if line.strip()}
    assert {n for n, r in ours.items() if r["status"] == "running"} == set(running)
    assert ours[name]["image"] == f"{name}:dev" == running[name][0]
    assert ours[name]["ssh_target"] == f"{name}.envd"

    # the SSH entry points at the port dockerd published for 2222, after the user's entry
    port = docker("port", name, "2222/tcp", docker_host=docker_host).stdout.split(":")[-1].strip()
    config = envd.ssh_config
    assert config.startswith(USER_SSH)
    assert f"Host {name}.envd\n  HostName 127.0.0.1\n  Port {port}\n".encode() in config
    key = envd.home / "envd-config" / "id_rsa_envd"
    assert key.is_file() and os.stat(key).st_mode & 0o777 == 0o600

    # exec: the project is mounted and is the working directory; env and commands from the image
    out = envd("exec", "--name", name, "--raw", "pwd; cat marker.txt; echo $H8_ENV").stdout
    assert out.split("\n")[:3] == [f"/home/envd/{name}", f"marker {name}", "from-build"]
    assert envd("exec", "--name", name, "--command", "greet").stdout.strip() == \
        "greet-from-build"
    failing = envd("exec", "--name", name, "--", "sh", "-c", "exit 7", check=False)
    assert failing.returncode == 7

    envd("down", cwd=project)
    assert docker("ps", "-aq", "--filter", f"name=^{name}$",
                  docker_host=docker_host).stdout.strip() == ""
    assert envd.ssh_config == USER_SSH


def test_force_replaces_and_a_killed_environment_shows(envd: Envd, project: Path,
                                                       docker_host: str) -> None:
    name = project.name
    envd("up", "--detach", cwd=project)
    first = docker("inspect", "--format", "{{.Id}}", name, docker_host=docker_host).stdout
    again = envd("up", "--detach", cwd=project, check=False)
    assert "already running" in one_line(again)
    assert "Building" not in again.stderr  # refused before the build
    envd("up", "--detach", "--force", cwd=project)
    second = docker("inspect", "--format", "{{.Id}}", name, docker_host=docker_host).stdout
    assert second != first
    assert envd.ssh_config.count(f"Host {name}.envd".encode()) == 1

    docker("kill", name, docker_host=docker_host)
    rows = {r["name"]: r for r in json.loads(envd("envs", "ls", "-f", "json").stdout)}
    state = docker("inspect", "--format", "{{.State.Status}}", name,
                   docker_host=docker_host).stdout.strip()
    assert rows[name]["status"] == state != "running"
    down = envd("exec", "--name", name, "--", "true", check=False)
    assert f"environment `{name}` is {state}, not running" in one_line(down)
    envd("down", "--name", name)
    assert envd.ssh_config == USER_SSH


@pytest.mark.parametrize(("flags", "fragment"), [
    (("--volume", "/tmp"), "exactly one `:`"),
    (("--volume", "/envd-h8-missing-dir:/data"), "does not exist"),
    (("--name", "envd-h8 bad/name"), "invalid environment name"),
    # the device request reaches dockerd, which has no nvidia runtime here: one line, no leftovers
    (("--gpus", "1"), "asks for GPUs"),
])
def test_bad_input_is_one_line(envd: Envd, project: Path, docker_host: str,
                               flags: tuple[str, ...], fragment: str) -> None:
    name = project.name
    envd("up", "--detach", "--name", name, cwd=project)
    envd("down", "--name", name)
    proc = envd("run", "--image", f"{name}:dev", "--detach", "--name", name, *flags,
                cwd=project, check=False)
    assert fragment in one_line(proc)
    assert envd.ssh_config == USER_SSH
    assert docker("ps", "-aq", "--filter", f"name=^{name}$",
                  docker_host=docker_host).stdout.strip() == ""


def test_port_already_allocated(envd: Envd, tmp_path: Path, registry: str,
                                docker_host: str) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    name = f"envd-h8-{uuid.uuid4().hex[:8]}"
    project = write_project(tmp_path / name, registry, expose=(
        f'runtime.expose(envd_port=8000, host_port={port}, service="web")'))
    try:
        proc = envd("up", "--detach", cwd=project, check=False)
        line = one_line(proc)
        assert "host port" in line and f"127.0.0.1:{port}" in line, line
        assert "already" in line, line
        assert envd.ssh_config == USER_SSH
        assert docker("ps", "-aq", "--filter", f"name=^{name}$",
                      docker_host=docker_host).stdout.strip() == ""
    finally:
        holder.close()
        docker("rm", "-f", name, docker_host=docker_host, check=False)
        docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    import select
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_up_attaches_a_shell_in_a_terminal(envd: Envd, project: Path) -> None:
    """Without --detach, ``up`` attaches in a real pseudo-terminal (through exec: no sshd yet)."""
    main, secondary = os.openpty()
    proc = subprocess.Popen([ENVD, "up", "--progress", "plain"], cwd=project, env=envd.env(),
                            stdin=secondary, stdout=secondary, stderr=secondary,
                            start_new_session=True)
    os.close(secondary)
    try:
        banner = _read_until(main, b"leave with `exit`", 300)
        assert b"through runner `docker`'s exec: its image has no SSH server" in banner, \
            banner[-2000:]
        prompt = _read_until(main, f"/home/envd/{project.name} # ".encode(), 30)
        assert prompt, banner[-2000:]
        os.write(main, b"echo tty-$((6*7)) $(pwd) && tty\n")
        out = _read_until(main, b"/dev/pts/", 30)
        assert f"tty-42 /home/envd/{project.name}".encode() in out, out
        os.write(main, b"exit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    # leaving the shell keeps the environment (as upstream's ssh session does)
    rows = {r["name"]: r for r in json.loads(envd("envs", "ls", "-f", "json").stdout)}
    assert rows[project.name]["status"] == "running"


def test_upstream_envd_lists_our_environment_with_the_same_keys(
        envd: Envd, project: Path, upstream_envd: str) -> None:
    """Upstream v1.3.4's ``envs ls`` on the same dockerd sees our environment; the JSON keys it
    prints are among ours and the shared values agree."""
    name = project.name
    envd("up", "--detach", cwd=project)
    env = dict(envd.env(), ENVD_NO_TELEMETRY="true")
    proc = subprocess.run([upstream_envd, "envs", "ls", "--format", "json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = {r["name"]: r for r in json.loads(proc.stdout)}[name]
    ours = {r["name"]: r for r in json.loads(envd("envs", "ls", "-f", "json").stdout)}[name]
    assert set(theirs) <= set(ours), (theirs, ours)
    for key in ("name", "ssh_target", "image", "gpu"):
        assert theirs[key] == ours[key], key
    assert theirs["status"].startswith("Up") and ours["status"] == "running"


def test_up_on_a_tcp_builder_loads_the_image_into_the_runner(
        envd: Envd, project: Path, buildkit_tcp: str) -> None:
    """A builder outside dockerd: the docker-format output is loaded into the runner, then run."""
    envd("context", "create", "--name", "tcp-h8", "--builder", "tcp", "--builder-address",
         buildkit_tcp, "--use")
    up = envd("up", "--detach", cwd=project)
    assert f"Environment {project.name} is running" in up.stderr
    assert envd("exec", "--name", project.name, "--raw", "echo $H8_ENV").stdout.strip() == \
        "from-build"
    envd("down", cwd=project)
    assert envd.ssh_config == USER_SSH


def test_runtime_init_daemon_and_mount_apply_at_start(envd: Envd, tmp_path: Path,
                                                      registry: str, docker_host: str) -> None:
    name = f"envd-h8-{uuid.uuid4().hex[:8]}"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    project = write_project(tmp_path / name, registry, expose=(
        'runtime.init(commands=["echo init-ran > /tmp/init.txt"])\n'
        '    runtime.daemon(commands=[["sh", "-c", "echo daemon-up > /tmp/daemon.txt; '
        'exec sleep 1000"]])\n'
        f'    runtime.mount(host_path="{shared}", envd_path="/shared")'))
    try:
        envd("up", "--detach", cwd=project)
        out = envd("exec", "--name", name, "--raw",
                   "sleep 1; cat /tmp/init.txt /tmp/daemon.txt /shared/in.txt").stdout
        assert out.splitlines() == ["init-ran", "daemon-up", "from the host"], out
        # PID 1 ends on SIGTERM by itself (exit 0), rather than being killed after the timeout
        docker("stop", name, docker_host=docker_host)
        code = docker("inspect", "--format", "{{.State.ExitCode}}", name,
                      docker_host=docker_host).stdout.strip()
        assert code == "0", code
    finally:
        docker("rm", "-f", name, docker_host=docker_host, check=False)
        docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)
