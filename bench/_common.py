"""What several benches share: the infra's endpoints, one timed ``envd`` process or forked child,
and the dev project of the ``up``/``run`` benches with its floor.

- :func:`infra_env`: ``scripts/infra env --json``;
- :func:`timed_process`: one fresh process, its wall time, its CPU (user+sys from ``os.wait4``,
  what load distorts least) and its output;
- :func:`fork_envd`: ``envd ARGV`` in a forked child of the bench (which imported what a
  resident keeps loaded), as a resident's per-command child runs it; its exit code and CPU;
- :func:`dev_project` and :func:`floor`: the project ``bench_up.py`` and ``bench_up_warm.py``
  bring up (``base(image=<registry>/python:3.11-bookworm, dev=True)`` plus an env var), and
  ``docker run -d`` of its image with the same mount and host key until SSH greets: what any
  tool pays at least;
- :func:`phase_medians`: the median of each ``ENVD_TIMINGS`` phase over runs.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVD = str(Path(sys.executable).with_name("envd"))


def infra_env() -> dict[str, str]:
    """``scripts/infra env --json`` (endpoints and image names), values as strings."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "infra"), "env", "--json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return {k: str(v) for k, v in json.loads(out).items()}


@dataclass
class Done:
    """One timed process."""

    code: int
    wall: float  #: seconds from spawn to exit
    cpu: float  #: user + system seconds of the process (not of a resident's child)
    stdout: bytes
    stderr: bytes


def timed_process(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Done:
    """Run ``argv`` once as a fresh process; its output goes to temp files (no pipe to drain
    while it runs, and ``os.wait4`` rather than ``Popen.wait`` keeps its rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Done(proc.returncode, wall, usage.ru_utime + usage.ru_stime, out.read(),
                    err.read())


def fork_envd(argv: list[str], cwd: Path, env: dict[str, str],
              profile: Path | None = None) -> tuple[int, float]:
    """Fork a child that runs ``envd argv`` with this process's modules, as a resident's child
    does (:func:`envd_core.cli.app.run`, then ``exit_now``); (exit code, CPU seconds).
    ``profile``: write the child's cProfile stats there."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            from envd_core.cli.app import create_cli, exit_now, run

            if profile is None:
                code = run(create_cli(), argv)
            else:
                import cProfile

                prof = cProfile.Profile()
                code = prof.runcall(run, create_cli(), argv)
                prof.dump_stats(str(profile))
            exit_now(code)
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def docker(*args: str) -> str:
    """``docker ARGS``' stdout (fails loudly)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def greets(port: int) -> bool:
    """Whether an SSH server greets on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(1)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(port: int, timeout: float = 60) -> None:
    """Poll every 20 ms until SSH greets on ``port``."""
    deadline = time.monotonic() + timeout
    while not greets(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no SSH greeting on 127.0.0.1:{port}")
        time.sleep(0.02)


def ssh_port(container: str) -> int:
    """The host port published for the container's SSH port 2222."""
    return int(docker("port", container, "2222/tcp").rsplit(":", 1)[1])


@dataclass
class DevProject:
    """The up/run benches' dev project, in a temp dir: the user's HOME is never touched."""

    work: Path  #: the temp dir holding everything below
    name: str  #: the project's (and its environment's container's) name
    project: Path
    env: dict[str, str]  #: the environment of envd: HOME, ENVD_CONFIG_DIR, images, DOCKER_HOST
    host_key: Path  #: an ed25519 key pair, for the floor's SSH server

    @property
    def image(self) -> str:
        """The image ``envd up`` builds for the project."""
        return f"{self.name}:dev"

    def envd(self, *argv: str, env: dict[str, str] | None = None) -> None:
        """Run ``envd ARGV`` in the project, untimed (fails loudly); without ``env``, with
        ``ENVD_RESIDENT=0``, so it leaves no resident server in the user's socket directory."""
        done = timed_process([ENVD, *argv], env or {**self.env, "ENVD_RESIDENT": "0"},
                             cwd=self.project)
        if done.code != 0:
            raise SystemExit(f"bench: envd {' '.join(argv)} failed: "
                             f"{done.stderr.decode(errors='replace')[-2000:]}")

    def cleanup(self) -> None:
        """Remove the environment's container and the image."""
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", self.image], capture_output=True, check=False)


def dev_project(infra: dict[str, str], prefix: str) -> DevProject:
    """A fresh :class:`DevProject` named ``<prefix>-<6 hex>``."""
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    home = work / "home"
    (home / ".ssh").mkdir(parents=True)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    project = work / name
    project.mkdir()
    (project / "build.envd").write_text(
        "# syntax=v1\ndef build():\n"
        f'    base(image="{infra["REGISTRY"]}/python:3.11-bookworm", dev=True)\n'
        '    runtime.environ(env={"BENCH": "1"})\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
    env.update(HOME=str(home), ENVD_CONFIG_DIR=str(home / "envd-config"),
               ENVD_SSHD_IMAGE=infra["SSHD_IMAGE"], DOCKER_HOST=infra["DOCKER_HOST"])
    host_key = work / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True, capture_output=True)
    return DevProject(work, name, project, env, host_key)


def floor(p: DevProject, *, host_key: bool = True) -> float:
    """Seconds from ``docker run -d`` of the project's image (its mount, ``host_key`` bind
    mounted as envd gives every environment) until its SSH server greets; removed after."""
    extra = ["-v", f"{p.host_key}:/var/envd/hostkey:ro",
             "-e", "ENVD_HOST_KEY=/var/envd/hostkey"] if host_key else []
    t = time.monotonic()
    docker("run", "-d", "--name", p.name, "-p", "127.0.0.1::2222",
           "-v", f"{p.project}:/home/envd/{p.name}", *extra, p.image)
    wait_ssh(ssh_port(p.name))
    took = time.monotonic() - t
    docker("rm", "-f", p.name)
    return took


def phase_medians(rows_by_key: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per key, the median of each phase over its runs (0 in a run that lacks it), in the
    order the phases first appear."""
    return {k: {p: statistics.median(r.get(p, 0.0) for r in rows)
                for p in dict.fromkeys(p for r in rows for p in r)}
            for k, rows in rows_by_key.items() if rows}
