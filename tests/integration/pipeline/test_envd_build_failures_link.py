"""Failures outside the solve's own error path go through the cause table too (issue 18):

* moby-worker exports into dockerd and pushes afterwards with the Engine API: a refused push is
  a ``push``-stage failure with the table's reason and hint, not the Docker client's raw line;
* a builder whose daemon dies mid-build is a ``session``-stage failure naming the step that was
  running, not a connect-time message about TLS.

Real builds: dockerd's BuildKit and a disposable buildkitd that the test kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from test_envd_build_failures import _context, _Envd
from test_envd_build_support import ENVD, Envd, marker


def _envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> _Envd:
    cli = _Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.docker_config = tmp_path / "docker-config"  # no credentials for any registry
    cli.docker_config.mkdir()
    return cli


def _one_error(proc: subprocess.CompletedProcess[str]) -> tuple[list[str], dict[str, Any]]:
    """Exit 1; the last two stderr lines are the only ``envd:``/``hint:`` lines and say what
    the JSON says; no escaped line breaks anywhere."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    for line in lines:
        assert "\\n" not in line, f"escaped line break in: {line[:200]}"
    assert [i for i, line in enumerate(lines) if line.startswith("envd: ")] == [len(lines) - 2]
    assert [i for i, line in enumerate(lines) if line.startswith("hint: ")] == [len(lines) - 1]
    error = json.loads(proc.stdout)["error"]
    assert lines[-2] == f"envd: {error['message']}"
    assert lines[-1] == f"hint: {error['hint']}"
    return lines, error


def _push_context(tmp_path: Path, registry: str) -> Path:
    return _context(tmp_path / "env", f'base(image="{registry}/busybox:latest", dev=False)',
                    f'run(commands=["echo {marker()} > /envd-push-marker"])')


def test_moby_worker_push_to_unreachable_registry(tmp_path: Path, docker_host: str,
                                                  ca_bundle: str, registry: str) -> None:
    """The push after a moby export fails to connect: registry-unreachable, stage push."""
    envd = _envd(tmp_path, docker_host, ca_bundle)
    image = f"127.0.0.1:5999/envd-test-builders/push:{marker()}"
    context = _push_context(tmp_path, registry)
    try:
        proc = envd.run("build", "--progress", "plain", "--format", "json", "--output",
                        f"type=image,name={image},push=true", cwd=context, check=False)
        lines, error = _one_error(proc)
        assert lines[-2] == (f"envd: cannot push `{image}`: the registry at `127.0.0.1:5999` "
                             "did not accept a connection")
        assert error["stage"] == "push" and error["cause"] == "registry-unreachable"
        assert "connection refused" in error["detail"]
        # the daemon's own line is kept for --debug and JSON, not printed as the error
        assert "refused to push" not in lines[-2]
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False,
                       env={**os.environ, "DOCKER_HOST": docker_host})


def test_moby_worker_push_without_credentials(tmp_path: Path, docker_host: str, ca_bundle: str,
                                              registry: str, auth_registry: Any) -> None:
    """The push after a moby export to the htpasswd registry with no login: a registry cause
    (401, or the engine not trusting its CA), stage push, with that cause's hint."""
    envd = _envd(tmp_path, docker_host, ca_bundle)
    host = auth_registry.address
    image = f"{host}/envd-test-builders/push:{marker()}"
    context = _push_context(tmp_path, registry)
    try:
        proc = envd.run("build", "--progress", "plain", "--format", "json", "--output",
                        f"type=image,name={image},push=true", cwd=context, check=False)
        lines, error = _one_error(proc)
        assert error["stage"] == "push"
        assert error["cause"] in ("unauthorized", "registry-tls"), error
        assert lines[-2].startswith(f"envd: cannot push `{image}`: ")
        if error["cause"] == "unauthorized":
            assert lines[-1] == (f"hint: log in with `docker login {host}` (envd reads the "
                                 "docker config, DOCKER_CONFIG, and its credential helpers)")
        else:
            assert lines[-1].startswith("hint: add the registry's CA to the builder's")
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False,
                       env={**os.environ, "DOCKER_HOST": docker_host})


def test_daemon_killed_mid_build(tmp_path: Path, docker_host: str, ca_bundle: str,
                                 registry: str, disposable_buildkitd: Any) -> None:
    """The buildkitd dies while a step runs: one session-stage line naming that step."""
    envd: Envd = _envd(tmp_path, docker_host, ca_bundle)
    envd.run("context", "create", "--name", "doomed", "--builder", "unix", "--builder-address",
             disposable_buildkitd.address, "--use")
    step = f"run: sleep 120 && echo {marker()}"
    context = _context(tmp_path / "env", f'base(image="{registry}/busybox:latest", dev=False)',
                       f'run(commands=["{step.removeprefix("run: ")}"])')
    argv = [ENVD, "build", "--progress", "plain", "--format", "json", "--output",
            f"type=tar,dest={tmp_path / 'out.tar'}"]
    proc = subprocess.Popen(argv, cwd=context, env=envd.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None and proc.stdout is not None
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line.rstrip("\n"))
            if line.rstrip("\n").endswith(f" {step}"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(300), "\n".join(seen[-30:])
        time.sleep(1.0)  # the step's process is running inside the daemon
        os.kill(disposable_buildkitd.pid, signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = subprocess.CompletedProcess(argv, proc.returncode, out, "\n".join(seen) + "\n")
    lines, error = _one_error(done)
    assert error["stage"] == "session" and error["cause"] == "builder-lost", error
    assert error["step"] == step
    assert lines[-2] == (f"envd: build failed at `{step}`: the connection to the builder "
                         f"`{disposable_buildkitd.address}` dropped mid-build")
    assert lines[-1] == ("hint: its daemon may have stopped or restarted: check it with "
                         "`envd context ls --status` (`envd bootstrap` starts a daemon envd "
                         "manages), then build again")
    assert "TLS" not in lines[-2]
