"""``envd debug llb`` prints what ``buildctl debug dump-llb`` (v0.18.2, the reference) prints
for the definition ``envd build --dump-llb`` writes: the dot graph byte for byte, the JSON lines
value for value."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_envd_build_support import Envd

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "python-basic"

DEV_FILE = """\
def build():
    base(image="127.0.0.1:5000/python:3.11-bookworm", dev=True)
    shell("zsh")
    install.apt_packages(name=["jq"])
    install.python_packages(name=["six"])
    runtime.init(["echo hi"])
    runtime.expose(envd_port=8000, service="web")
    io.copy(source="build.envd", target="/opt/b.envd")
"""


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> Envd:
    return Envd(config_dir=tmp_path / "config", docker_host=docker_host, ca_bundle=ca_bundle)


@pytest.fixture(params=["example", "dev"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    if request.param == "example":
        shutil.copytree(EXAMPLE, target)
    else:
        target.mkdir()
        (target / "build.envd").write_text(DEV_FILE)
    return target


def test_same_as_buildctl_dump_llb(envd: Envd, buildctl: str, project: Path,
                                   tmp_path: Path) -> None:
    definition = tmp_path / "definition.pb"
    envd.run("build", "--dump-llb", str(definition), cwd=project)

    def theirs(*flags: str) -> str:
        return subprocess.run([buildctl, "debug", "dump-llb", *flags, str(definition)],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    assert envd.run("debug", "llb", "--dot", cwd=project).stdout == theirs("--dot")
    ours = [json.loads(line) for line in envd.run("debug", "llb", cwd=project).stdout.splitlines()]
    reference = [json.loads(line) for line in theirs().splitlines()]
    assert ours == reference
    kinds = {next(iter(entry["Op"]["Op"]), "") for entry in ours}
    assert {"source", "exec", "file", ""} <= kinds  # the comparison covered each kind of op


def test_alias_and_one_platform(envd: Envd) -> None:
    alias = envd.run("debug", "b", "--dot", "-p", str(EXAMPLE)).stdout
    assert alias == envd.run("debug", "llb", "--dot", "--path", str(EXAMPLE)).stdout
    assert alias.startswith("digraph {\n")
    many = envd.run("debug", "llb", "--platform", "linux/amd64,linux/arm64", "-p", str(EXAMPLE),
                    check=False)
    assert many.returncode == 2
    assert many.stderr.startswith("envd: `envd debug llb` shows one platform at a time")
