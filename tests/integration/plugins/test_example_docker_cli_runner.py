"""The example runner `example-docker-cli` (docs/examples/envd-example-plugin) on real dockerd.

The shared `RunnerContract` drives a real busybox environment through its whole lifecycle; the
tests below add what is particular to this runner: it shows only labelled containers, cleans up
after a failed start, and passes a multi-word entrypoint through the one-word `--entrypoint`.
Every container is named `envd-h9-…` or `envd-contract-…` and removed afterwards.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from envd_core.environment import EnvironmentSpec, EnvironmentStatus
from envd_core.errors import RunnerError
from envd_core.runner import EnvironmentNotFoundError
from envd_core.testing import RunnerContract

PACKAGE = (Path(__file__).resolve().parents[3] / "docs" / "examples" / "envd-example-plugin"
           / "envd_example_plugin")


def load_example() -> ModuleType:
    """The example package from its files (it is documentation, not installed)."""
    if "envd_example_plugin" in sys.modules:
        return sys.modules["envd_example_plugin"]
    spec = importlib.util.spec_from_file_location(
        "envd_example_plugin", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load_example()
BUSYBOX = "127.0.0.1:5000/busybox:latest"
DockerCliRunner = example.DockerCliRunner


class TestExampleDockerCliLifecycle(RunnerContract):
    """Create/exec/stop/start/pause/logs/remove on a real container, through the docker CLI."""

    runner_cls = DockerCliRunner
    valid_address = "unix:///var/run/docker.sock"
    lifecycle_image = BUSYBOX

    @pytest.fixture(autouse=True)
    def _dockerd(self, docker_host: str) -> None:
        """Skips (or fails in CI) when the shared dockerd is down."""


@pytest.fixture
def runner(docker_host: str) -> DockerCliRunner:
    return DockerCliRunner(docker_host)


@pytest.fixture
def name(docker_host: str) -> Iterator[str]:
    """A fresh `envd-h9-…` container name, force-removed afterwards whatever happened."""
    value = f"envd-h9-{uuid.uuid4().hex[:10]}"
    yield value
    subprocess.run(["docker", "-H", docker_host, "rm", "--force", value], capture_output=True,
                   check=False)


def test_other_containers_are_not_environments(runner, name, docker_host):
    subprocess.run(["docker", "-H", docker_host, "run", "--detach", "--name", name, BUSYBOX,
                    "sleep", "60"], check=True, capture_output=True)
    assert name not in [env.name for env in runner.list_environments()]
    with pytest.raises(EnvironmentNotFoundError, match=f"`{name}` not found"):
        runner.inspect(name)
    with pytest.raises(EnvironmentNotFoundError):
        runner.remove(name, force=True)
    running = subprocess.run(["docker", "-H", docker_host, "inspect", "--format",
                              "{{.State.Running}}", name], capture_output=True, text=True)
    assert running.stdout.strip() == "true"  # never touched


def test_a_failed_start_leaves_nothing(runner, name):
    spec = EnvironmentSpec(name=name, image=BUSYBOX, command=("/no/such/binary",))
    with pytest.raises(RunnerError, match="`docker run` failed"):
        runner.create(spec)
    with pytest.raises(EnvironmentNotFoundError):
        runner.inspect(name)


def test_multi_word_entrypoint_and_labels(runner, name):
    spec = EnvironmentSpec(name=name, image=BUSYBOX, entrypoint=("sh", "-c"),
                           command=("echo started; exec sleep 60",), labels={"team": "ml"})
    environment = runner.create(spec)
    assert environment.status is EnvironmentStatus.RUNNING
    assert environment.labels["team"] == "ml"
    assert example.runner.LABEL not in environment.labels  # the runner's own mark stays hidden
    assert environment.runner == "example-docker-cli"
    out = io.BytesIO()
    assert runner.exec(name, ["sh", "-c", "echo $0"], stdout=out) == 0
    assert b"sh" in out.getvalue()
    assert b"".join(runner.logs(name)) == b"started\n"
    runner.remove(name, force=True)
    assert name not in [env.name for env in runner.list_environments()]


def test_status_names_the_engine(runner):
    status = runner.status(timeout=10)
    assert status.reachable, status
    assert status.version is not None and status.version.startswith("Docker Engine ")


def test_unreachable_daemon_is_a_status_not_an_exception(tmp_path):
    status = DockerCliRunner(f"unix://{tmp_path}/none.sock").status(timeout=10)
    assert not status.reachable
    assert status.error is not None and "\n" not in status.error


def test_exec_into_real_files_and_following_logs_stops_cleanly(runner, name, tmp_path):
    spec = EnvironmentSpec(name=name, image=BUSYBOX,
                           command=("sh", "-c", "while true; do echo tick; sleep 0.2; done"))
    runner.create(spec)
    # streams with a file descriptor go to docker as they are (no pump thread in between)
    source = tmp_path / "in"
    source.write_bytes(b"through a file\n")
    with source.open("rb") as stdin, (tmp_path / "out").open("wb") as stdout:
        assert runner.exec(name, ["cat"], stdin=stdin, stdout=stdout) == 0
    assert (tmp_path / "out").read_bytes() == b"through a file\n"
    # a follower the caller abandons must not leave a `docker logs -f` behind or hang
    follower = runner.logs(name, follow=True)
    assert b"tick" in next(follower)
    follower.close()
    assert b"".join(runner.logs(name, tail=1)) == b"tick\n"
