"""The rootless builder's container mode for real, on the infra's dockerd.

The infra builds ``127.0.0.1:5000/moby/buildkit:v0.18.2-rootless`` (the moby/buildkit rootless
layout from its own binaries). The test runs the seed scenario on a ``mode=container`` context:
``envd bootstrap``, a build with ``push=true``, the image pulled back and run; it checks that
every daemon process in the container has uid 1000 on the host (never root), that the container
is not privileged and has no added capability, that the build step was root only inside a user
namespace, and that ``envd builder rm`` removes the container and its volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _docker(*args: str, host: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "DOCKER_HOST": host})
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class Envd:
    """The ``envd`` of this venv with a private config directory."""

    def __init__(self, config: Path, docker_host: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
        self.env.update(ENVD_CONFIG_DIR=str(config), DOCKER_HOST=docker_host, NO_COLOR="1",
                        HOME=str(config.parent / "home"))
        self.env.pop("BUILDKIT_CONNECTING_TIMEOUT", None)
        self.exe = str(Path(os.sys.executable).with_name("envd"))

    def __call__(self, *args: str, cwd: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.exe, *args], capture_output=True, text=True, cwd=cwd,
                              env=self.env, timeout=900, check=False, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"envd {' '.join(args)} exited {proc.returncode}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc


@pytest.fixture
def daemon_name(docker_host: str) -> Iterator[str]:
    name = f"envd_test_builders_{uuid.uuid4().hex[:8]}"
    yield name
    _docker("rm", "-f", f"envd_rootless_{name}", host=docker_host, check=False)
    _docker("volume", "rm", "-f", f"envd_rootless_{name}_state", host=docker_host, check=False)


def test_seed_scenario_on_a_rootless_container(tmp_path: Path, infra: dict[str, Any],
                                               docker_host: str, registry: str,
                                               daemon_name: str) -> None:
    envd = Envd(tmp_path / "config", docker_host)
    container = f"envd_rootless_{daemon_name}"
    envd("context", "create", "--name", "rlc", "--builder", "rootless", "--builder-address",
         daemon_name, "--builder-opt", "mode=container", "--builder-opt",
         f"image={infra['BUILDKIT_ROOTLESS_IMAGE_REF']}", "--builder-opt", "network=host",
         "--use")
    before = json.loads(envd("context", "ls", "--status", "--format", "json").stdout)
    assert next(r for r in before if r["context"] == "rlc")["status"]["reachable"] is False
    boot = json.loads(envd("bootstrap", "--with-autocomplete=false", "--format",
                           "json").stdout)
    assert boot["action"] == "created" and boot["running"] is True, boot
    assert boot["url"] == f"rootless://{daemon_name}" and boot["version"] == "v0.18.2"

    # Not privileged, nothing added: Docker's default capability set, seccomp/AppArmor off.
    host_config = json.loads(_docker("inspect", "-f", "{{json .HostConfig}}", container,
                                     host=docker_host).stdout)
    assert host_config["Privileged"] is False and not host_config["CapAdd"]
    assert "seccomp=unconfined" in host_config["SecurityOpt"]
    # Every daemon process is uid 1000 on the host: rootlesskit, its child, buildkitd.
    top = _docker("top", container, "-eo", "uid,pid,args",
                  host=docker_host).stdout.splitlines()[1:]
    assert len(top) >= 3 and all(line.split()[0] == "1000" for line in top), top
    assert any("buildkitd" in line for line in top)

    project = tmp_path / "env"
    project.mkdir()
    (project / "build.envd").write_text(
        "# syntax=v1\n\ndef build():\n"
        f'    base(image="{registry}/busybox:latest", dev=False)\n'
        '    run(commands=["id -u > /built-as && cat /proc/self/uid_map >> /built-as"])\n')
    image = f"{registry}/envd-test-builders/rootless-container:{daemon_name}"
    try:
        built = envd("build", "--progress", "plain", "--format", "json", "--output",
                     f"type=image,name={image},push=true", cwd=project)
        assert json.loads(built.stdout)["pushed"] is True
        _docker("pull", "-q", image, host=docker_host)
        seen = _docker("run", "--rm", "--entrypoint", "cat", image, "/built-as",
                       host=docker_host).stdout.split()
        # root (uid 0) inside the step, mapped from uid 1000 and the subordinate range
        assert seen[:4] == ["0", "0", "1000", "1"] and seen[4:7] == ["1", "100000", "65536"]
    finally:
        _docker("rmi", "-f", image, host=docker_host, check=False)

    again = json.loads(envd("bootstrap", "--with-autocomplete=false", "--format",
                            "json").stdout)
    assert again["action"] == "reused"
    gone = json.loads(envd("builder", "rm", "--format", "json").stdout)
    assert gone["action"] == "removed"
    assert _docker("inspect", container, host=docker_host, check=False).returncode != 0
    assert _docker("volume", "inspect", f"{container}_state", host=docker_host,
                   check=False).returncode != 0
    status = json.loads(envd("context", "ls", "--status", "--format", "json").stdout)
    row = next(r for r in status if r["context"] == "rlc")
    assert row["status"]["reachable"] is False and row["status"]["error_kind"] == "not-found"
    assert "does not exist" in row["status"]["error"], row
