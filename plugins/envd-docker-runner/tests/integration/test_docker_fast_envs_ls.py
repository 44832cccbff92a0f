"""``envd envs ls`` on the real shared dockerd: the fast path prints the full CLI's bytes.

Both ways in run as fresh interpreters through ``envd_core.cli`` (the console script's entry):
``main`` (the fast path when it can) and ``app.main`` (the full click CLI, plugins loaded). The
daemon is shared with other test runs that create and remove containers, so a comparison counts
only when two full listings around the fast one agree (nothing changed in between).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envd_docker_runner import DockerRunner

from envd_core.environment import EnvironmentSpec, PortMapping
from envd_core.testing import CliProbe

BUSYBOX = "127.0.0.1:5000/busybox:latest"
HEAVY = ("click", "pluggy", "attrs", "attr", "docker", "requests", "urllib3", "grpc",
         "kubernetes", "email", "http")

Envd = CliProbe


@pytest.fixture
def envd(tmp_path: Path, docker_host: str) -> Envd:
    tool = Envd(tmp_path, {"DOCKER_HOST": docker_host})
    tool.run("context", "ls")  # the store, seeded by the full CLI
    tool.run("envs", "ls")  # the plugin index, written by the full CLI
    return tool


@pytest.fixture
def environment(docker_host: str) -> Iterator[str]:
    """A running envd environment with SSH and Jupyter ports and the GPU labels."""
    runner = DockerRunner(docker_host)
    name = f"envd-fastls-{uuid.uuid4().hex[:8]}"
    runner.create(EnvironmentSpec(
        name=name, image=BUSYBOX, command=("sleep", "600"),
        ports=(PortMapping(2222, service="ssh"), PortMapping(8888, service="jupyter")),
        labels={"ai.tensorchord.envd.gpu": "true", "ai.tensorchord.envd.gpu.cuda": "11.8",
                "ai.tensorchord.envd.gpu.cudnn": "8"},
    ))
    try:
        yield name
    finally:
        runner.remove(name, force=True)


def _stable_pair(envd: Envd, args: list[str]) -> tuple[tuple[Any, str, str], tuple[Any, str, str]]:
    """(full, fast) results of ``args`` taken while the daemon's envd containers held still."""
    for _ in range(10):
        before = envd.run(*args, mode="full")
        fast = envd.run(*args)
        after = envd.run(*args, mode="full")
        if before[1:] == after[1:]:
            return before, fast
    pytest.fail("the shared dockerd's envd containers changed during every one of 10 tries")


@pytest.mark.parametrize("args", [["envs", "ls"], ["envs", "ls", "--format", "json"],
                                  ["envs", "list", "-fjson"]], ids=" ".join)
def test_fast_envs_ls_prints_the_full_clis_bytes(envd: Envd, environment: str,
                                                 args: list[str]) -> None:
    full, fast = _stable_pair(envd, args)
    assert "click" not in fast[0]["modules"], "expected the fast path"
    assert "click" in full[0]["modules"]
    assert (fast[0]["code"], fast[1], fast[2]) == (full[0]["code"], full[1], full[2])
    assert environment in fast[1]


def test_fast_envs_ls_row_is_the_environment(envd: Envd, environment: str,
                                             docker_host: str) -> None:
    report, out, _err = envd.run("envs", "ls", "--format", "json")
    assert "click" not in report["modules"]
    row = {r["name"]: r for r in json.loads(out)}[environment]
    inspected = DockerRunner(docker_host).inspect(environment)
    ssh = inspected.ssh
    assert ssh is not None
    jupyter = inspected.port_for(8888)
    assert jupyter is not None
    assert row == {
        "name": environment, "ssh_target": f"{environment}.envd", "image": BUSYBOX,
        "gpu": True, "cuda": "11.8", "cudnn": "8", "status": "running",
        "endpoint": f"jupyter: http://127.0.0.1:{jupyter.host_port}",
        "jupyter_address": f"http://127.0.0.1:{jupyter.host_port}",
        "ssh_port": ssh.port, "id": inspected.id[:12],
    }


def test_fast_envs_ls_imports_nothing_heavy(envd: Envd, environment: str) -> None:
    report, out, _err = envd.run("envs", "ls")
    assert report["code"] == 0 and environment in out
    heavy = sorted(set(report["modules"]) & set(HEAVY))
    assert heavy == [], f"the fast path of envs ls imported {heavy}"
    assert "envd_docker_runner" not in report["modules"], "only the lister's package loads"


def test_unreachable_daemon_is_the_full_clis_one_line(envd: Envd, tmp_path: Path) -> None:
    envd.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such.sock"
    envd.run("envs", "ls")  # the index for this environment
    report, out, err = envd.run("envs", "ls")
    assert report["code"] == 1 and out == ""
    assert "click" in report["modules"], "an error declines to the full CLI, which reports it"
    assert err.splitlines()[0] == (f"envd: cannot reach the Docker daemon at "
                                   f"`unix://{tmp_path}/no-such.sock`: No such file or directory")


def test_list_environments_is_the_listing(docker_host: str, environment: str) -> None:
    runner = DockerRunner(docker_host)
    listed = {e.name: e for e in runner.list_environments()}[environment]
    inspected = runner.inspect(environment)
    assert (listed.name, listed.image, listed.status, listed.id, listed.ports, listed.ssh,
            listed.labels) == (inspected.name, inspected.image, inspected.status, inspected.id,
                               inspected.ports, inspected.ssh, inspected.labels)
    assert listed.created is not None and inspected.created is not None
    assert abs((listed.created - inspected.created).total_seconds()) < 1
