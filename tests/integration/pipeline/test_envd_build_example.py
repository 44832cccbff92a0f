"""The repository's example environment (examples/python-basic) built as a user would.

Covers what the synthetic environment of the other files does not: ``load()`` of a helper
file, ``requirements.txt``, ``--from build.envd:serving`` with ``--tag``, and ``--force``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_envd_build_support import Envd, build_steps, docker, marker, remove_images

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "python-basic"


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    """The CLI on the tcp builder."""
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-example", "--builder", "tcp",
            "--builder-address", buildkit_tcp, "--use")
    return cli


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example, so nothing is written into the repository."""
    if not (EXAMPLE / "build.envd").is_file():
        pytest.skip(f"example missing at `{EXAMPLE}`")
    return Path(shutil.copytree(EXAMPLE, tmp_path / "python-basic"))


def test_example_default_function_runs(envd: Envd, example: Path, docker_host: str) -> None:
    """``envd build`` + ``docker run``: the entrypoint greets with env and the pip package."""
    tag = f"e2e-example-{marker()}:dev"
    try:
        envd.build(example, "--tag", tag)
        out = docker("run", "--rm", tag, docker_host=docker_host).stdout
        assert out.strip() == "hello from envd | six 1.16.0", out
        labels = json.loads(docker("inspect", "--type", "image", tag,
                                   docker_host=docker_host).stdout)[0]["Config"]["Labels"]
        assert json.loads(labels["ai.tensorchord.envd.apt.packages"]) == ["jq"]  # via load()
    finally:
        remove_images(docker_host, tag)


def test_example_serving_function_with_tag(envd: Envd, example: Path, docker_host: str) -> None:
    """``--from build.envd:serving``: its own entrypoint and the exposed port.

    As upstream does, exposed ports travel in the ``ai.tensorchord.envd.ports`` label (the
    runner publishes them), not in the image's ExposedPorts.
    """
    tag = f"e2e-example-{marker()}:serving"
    try:
        proc = envd.build(example, "--from", "build.envd:serving", "--tag", tag, "--format",
                          "json")
        assert json.loads(proc.stdout)["tag"] == tag
        config = json.loads(docker("inspect", "--type", "image", tag,
                                   docker_host=docker_host).stdout)[0]["Config"]
        # serving() sets its own entrypoint after the shared part (a second
        # config.entrypoint() appends, as upstream's does)
        assert config["Entrypoint"] == ["python3", "-m", "http.server", "8000"], config
        ports = json.loads(config["Labels"]["ai.tensorchord.envd.ports"])
        assert {"name": "web", "port": 8000} in ports, ports
    finally:
        remove_images(docker_host, tag)


def test_force_reruns_every_step(envd: Envd, example: Path, tmp_path: Path) -> None:
    """``--force`` after a cached build: no step is CACHED."""
    dest = tmp_path / "rootfs.tar"
    envd.build(example, "--output", f"type=tar,dest={dest}")
    forced = envd.build(example, "--force", "--output", f"type=tar,dest={dest}")
    steps = build_steps(forced.stderr)
    assert steps, forced.stderr[-2000:]
    assert [v.name for v in steps if v.cached] == [], forced.stderr[-3000:]
