"""Unit tests of the docker runner type."""

from __future__ import annotations

import io

import pytest
from envd_docker_runner import DockerRunner

from envd_core.dockerapi import DockerError, registry_host, split_tag
from envd_core.errors import ValidationError


def test_address_forms() -> None:
    assert DockerRunner.normalize_address("") is None
    assert DockerRunner.normalize_address("unix:///var/run/docker.sock") == "unix:///var/run/docker.sock"
    assert DockerRunner.normalize_address("tcp://127.0.0.1:2375") == "tcp://127.0.0.1:2375"
    with pytest.raises(ValidationError):
        DockerRunner.normalize_address("http://x")


def test_unreachable_daemon_is_one_clear_error(tmp_path: object) -> None:
    runner = DockerRunner(f"unix://{tmp_path}/missing.sock")
    with pytest.raises(DockerError, match="cannot reach the Docker daemon"):
        runner.load_image(io.BytesIO(b""))


@pytest.mark.parametrize(
    ("name", "repo", "tag"),
    [("a", "a", "latest"), ("a:1", "a", "1"), ("127.0.0.1:5000/x/y:2", "127.0.0.1:5000/x/y", "2"),
     ("127.0.0.1:5000/x", "127.0.0.1:5000/x", "latest")],
)
def test_split_tag(name: str, repo: str, tag: str) -> None:
    assert split_tag(name) == (repo, tag)


def test_registry_host() -> None:
    assert registry_host("ubuntu") == "docker.io"
    assert registry_host("user/img:1") == "docker.io"
    assert registry_host("127.0.0.1:5000/u/i") == "127.0.0.1:5000"
    assert registry_host("localhost/i") == "localhost"


from envd_core.testing import RunnerContract  # noqa: E402


class TestDockerRunnerContract(RunnerContract):
    runner_cls = DockerRunner
    valid_address = "unix:///var/run/docker.sock"
