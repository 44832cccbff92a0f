"""The seed scenario end to end: build an environment, push it, pull it, run it.

``envd context create --builder tcp …`` then ``envd build --output type=image,…,push=true``
on the tcp buildkitd, the same over the unix socket, and on the default context (moby-worker:
dockerd's BuildKit exports into dockerd, the image config is applied through Docker, the push
goes through the Docker API). Each pushed image is removed locally, pulled back from the
registry and run; what build.envd declared must be in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_envd_build_support import (
    Envd,
    check_image_config,
    check_image_contents,
    docker,
    marker,
    remove_images,
    write_environment,
)


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> Envd:
    """The CLI with a private config directory."""
    return Envd(tmp_path / "config", docker_host, ca_bundle)


def _push_pull_run(envd: Envd, tmp_path: Path, registry: str, docker_host: str,
                   *, build_args: tuple[str, ...] = ()) -> None:
    mark = marker()
    context = write_environment(tmp_path / f"env-{mark}", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/seed:latest"
    try:
        proc = envd.build(context, "--output", f"type=image,name={image},push=true",
                          *build_args, "--format", "json")
        result = json.loads(proc.stdout)
        assert result["pushed"] is True, result
        assert result["destination"] == image, result
        # Prove it came from the registry, not from a local store.
        remove_images(docker_host, image)
        docker("pull", "-q", image, docker_host=docker_host)
        check_image_contents(image, mark, docker_host=docker_host,
                             base_image=f"{registry}/python:3.11-bookworm")
        config = check_image_config(image, mark, docker_host=docker_host)
        labels = config["Labels"]
        assert json.loads(labels["ai.tensorchord.envd.graph.runtime"])["environ"] == {
            "E2E_MARK": mark, "E2E_SECOND": "two words"}
    finally:
        remove_images(docker_host, image)


def test_seed_scenario_on_tcp_context(envd: Envd, tmp_path: Path, registry: str,
                                      docker_host: str, buildkit_tcp: str) -> None:
    """The README's scenario, verbatim flags, CA bundle given as a context option."""
    address = buildkit_tcp.removeprefix("tcp://")
    envd.run("context", "create", "--name", "remote-context", "--builder", "tcp",
             "--builder-address", address, "--builder-opt", f"ca-bundle={envd.ca_bundle}",
             "--use")
    shown = envd.run("context", "ls").stdout
    assert "remote-context (current)" in shown, shown
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/seed:latest"
    try:
        # No --ca-bundle flag here: the context's `ca-bundle` option must be enough for pip.
        envd.run("build", "--progress", "plain", "--output",
                 f"type=image,name={image},push=true", cwd=context)
        remove_images(docker_host, image)
        docker("pull", "-q", image, docker_host=docker_host)
        check_image_contents(image, mark, docker_host=docker_host,
                             base_image=f"{registry}/python:3.11-bookworm")
        check_image_config(image, mark, docker_host=docker_host)
    finally:
        remove_images(docker_host, image)


def test_seed_scenario_on_unix_context(envd: Envd, tmp_path: Path, registry: str,
                                       docker_host: str, buildkit_unix: str) -> None:
    """Same environment through the unix-socket builder."""
    envd.run("context", "create", "--name", "local-unix", "--builder", "unix",
             "--builder-address", buildkit_unix, "--use")
    _push_pull_run(envd, tmp_path, registry, docker_host)


def test_seed_scenario_on_default_moby_worker_context(envd: Envd, tmp_path: Path, registry: str,
                                                      docker_host: str) -> None:
    """The default context (moby-worker on dockerd's BuildKit v0.8): export, config, push."""
    shown = envd.run("context", "ls").stdout
    assert "moby-worker" in shown and "default (current)" in shown, shown
    _push_pull_run(envd, tmp_path, registry, docker_host)
