"""The docker runner against the real shared dockerd: the whole RunnerContract, GPUs, images."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from envd_docker_runner import DockerRunner

from envd_core.environment import EnvironmentSpec, GPURequest, Resources
from envd_core.errors import RunnerError
from envd_core.testing import RunnerContract

BUSYBOX = "127.0.0.1:5000/busybox:latest"


class TestDockerRunnerLifecycle(RunnerContract):
    runner_cls = DockerRunner
    valid_address = "unix:///var/run/docker.sock"
    lifecycle_image = BUSYBOX

    @pytest.fixture(autouse=True)
    def _needs_dockerd(self, infra: dict[str, Any]) -> None:
        """Skip (or fail in CI) when the shared infra is not up."""


@pytest.fixture
def runner(infra: dict[str, Any]) -> Iterator[DockerRunner]:
    yield DockerRunner(infra["DOCKER_HOST"])


def test_gpu_request_reaches_dockerd_and_fails_in_one_line(runner: DockerRunner) -> None:
    name = f"envd-gpu-{uuid.uuid4().hex[:8]}"
    spec = EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "60"),
                           resources=Resources(gpus=GPURequest(count=1)))
    with pytest.raises(RunnerError) as info:
        runner.create(spec)
    message = str(info.value)
    assert "\n" not in message and f"`{name}` asks for GPUs" in message
    assert 'could not select device driver "nvidia"' in message
    assert "NVIDIA Container Toolkit" in (info.value.hint or "")
    # the container that could not start was removed, not left behind
    assert name not in {env.name for env in runner.list_environments()}
    assert not runner.client().api.containers(all=True, filters={"name": name})


def test_resources_reach_the_container(runner: DockerRunner) -> None:
    name = f"envd-res-{uuid.uuid4().hex[:8]}"
    spec = EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "60"),
                           resources=Resources(cpus=0.5, memory_bytes=64 << 20,
                                               shm_size_bytes=32 << 20),
                           cap_add=("SYS_PTRACE",))
    try:
        runner.create(spec)
        hc = runner.client().api.inspect_container(name)["HostConfig"]
        assert (hc["NanoCpus"], hc["Memory"], hc["ShmSize"]) == (500_000_000, 64 << 20, 32 << 20)
        assert hc["CapAdd"] == ["SYS_PTRACE"] and hc["RestartPolicy"]["Name"] == "always"
        out = io.BytesIO()
        assert runner.exec(name, ["sh", "-c", "df -k /dev/shm | tail -1"], stdout=out) == 0
        assert out.getvalue().split()[1] == b"32768"  # shm really is 32 MiB
    finally:
        runner.remove(name, force=True)


def test_missing_image_is_one_line(runner: DockerRunner) -> None:
    spec = EnvironmentSpec(name=f"envd-noimg-{uuid.uuid4().hex[:8]}",
                           image="127.0.0.1:5000/envd-no-such-image:nope")
    with pytest.raises(RunnerError, match="is not in the Docker daemon") as info:
        runner.create(spec)
    assert "envd build" in (info.value.hint or "")


def test_images_lists_the_local_busybox(runner: DockerRunner) -> None:
    images = runner.images()
    assert any(BUSYBOX in image.tags for image in images)
    with pytest.raises(RunnerError, match="is not in the Docker daemon"):
        runner.remove_image("127.0.0.1:5000/envd-no-such-image:nope")


def test_status_reports_the_engine_version(runner: DockerRunner) -> None:
    status = runner.status()
    assert status.reachable and status.version and status.version.startswith("dockerd 20.10")


def test_host_port_in_use_is_one_line_and_leaves_nothing(runner: DockerRunner) -> None:
    import socket

    from envd_core.environment import PortMapping

    name = f"envd-port-{uuid.uuid4().hex[:8]}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "60"),
                               ports=(PortMapping(80, port),))
        with pytest.raises(RunnerError) as info:
            runner.create(spec)
    assert f"`{name}`: a requested host port is already in use" in str(info.value)
    assert str(port) in str(info.value) and "\n" not in str(info.value)
    assert not runner.client().api.containers(all=True, filters={"name": name})


def test_exec_returns_when_the_command_ends_even_if_stdin_stays_open(
    runner: DockerRunner,
) -> None:
    """Like a terminal that never sends EOF: the exit code comes back as soon as it exits."""
    import os
    import time

    name = f"envd-stdin-{uuid.uuid4().hex[:8]}"
    runner.create(EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "60")))
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb", buffering=0) as never_ending:
            started = time.monotonic()
            code = runner.exec(name, ["sh", "-c", "exit 7"], stdin=never_ending,
                               stdout=io.BytesIO(), stderr=io.BytesIO())
            elapsed = time.monotonic() - started
        assert code == 7 and elapsed < 3, elapsed
    finally:
        os.close(write_end)
        runner.remove(name, force=True)
