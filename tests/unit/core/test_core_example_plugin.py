"""The documented example plugin (docs/examples/envd-example-plugin), loaded from its module.

Nothing is installed: the module is loaded from its file, registered in-process (and once through
a temporary entry point), and driven end to end through ``envd context create``. The shared
contract classes of :mod:`envd_core.testing` run against it and against the stub types.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from envd_core.environment import EnvironmentSpec, GPURequest, Mount, PortMapping, Resources
from envd_core.errors import RunnerError
from envd_core.plugins import Plugins
from envd_core.testing import (
    BuilderContract,
    RunnerContract,
    StubBuilder,
    StubRunner,
    assert_one_error,
    make_plugin,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # the floor is 3.10: tomli (a test dependency there) is the same parser
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "envd-example-plugin"


def load_example() -> ModuleType:
    if "envd_example_plugin" in sys.modules:
        return sys.modules["envd_example_plugin"]
    package = EXAMPLE / "envd_example_plugin"
    # a package (its runner is a submodule), so it needs its search location
    spec = importlib.util.spec_from_file_location(
        "envd_example_plugin", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load_example()


class TestExampleBuilderContract(BuilderContract):
    builder_cls = example.SocketDirBuilder
    valid_address = "/run/buildkit/"


class TestExampleRunnerContract(RunnerContract):
    """The static checks; the lifecycle on a real dockerd is in tests/integration/plugins."""

    runner_cls = example.DockerCliRunner
    valid_address = "unix:///var/run/docker.sock"


class TestStubBuilderContract(BuilderContract):
    builder_cls = StubBuilder
    valid_address = "anything"


class TestStubRunnerContract(RunnerContract):
    runner_cls = StubRunner
    valid_address = "unix:///var/run/docker.sock"


def test_pyproject_declares_the_entry_point():
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["envd"] == {"example": "envd_example_plugin"}
    assert any(dep.startswith("envd-core") for dep in meta["project"]["dependencies"])


def test_end_to_end_through_context_create(cli, register_plugin):
    register_plugin(example, name="example")
    register_plugin(make_plugin(runners=[StubRunner]), name="stub-runner")
    created = cli("context", "create", "--name", "sock", "--builder", "example-socket",
                  "--builder-address", "example-socket:///run//buildkit/",
                  "--builder-opt", "socket=b.sock", "--runner", StubRunner.name, "--use")
    assert created.exit_code == 0, created
    assert created.stderr_lines == ["Context sock is created", 'Current context is "sock"']
    (row,) = [r for r in json.loads(cli("context", "ls", "-f", "json").stdout)
              if r["context"] == "sock"]
    assert row["builder_addr"] == "example-socket:///run/buildkit"
    assert row["current"] is True
    details = json.loads(cli("context", "inspect", "--no-status").stdout)
    assert details["builder_options"] == {"socket": "b.sock"}
    builder = example.SocketDirBuilder("/run/buildkit", {"socket": "b.sock"})
    assert builder.socket_path == "/run/buildkit/b.sock"
    assert builder.option("wait") is True

    relative = cli("context", "create", "--name", "rel", "--builder", "example-socket",
                   "--builder-address", "run/buildkit", "--runner", StubRunner.name)
    stderr = assert_one_error(relative, code=2)
    assert "needs an absolute directory path, got `run/buildkit`" in stderr
    assert "hint: for example example-socket:///run/buildkit" in stderr

    default_address = cli("context", "create", "--name", "dflt", "--builder", "example-socket",
                          "--runner", StubRunner.name)
    assert default_address.exit_code == 0, default_address
    assert cli("context", "use", "default").exit_code == 0
    assert cli("context", "rm", "sock").exit_code == 0


def test_loaded_through_a_real_entry_point(tmp_path, monkeypatch, envd_config_dir):
    """The same module found by importlib.metadata, as after `pip install`."""
    site = tmp_path / "site"
    info = site / "envd_example_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: envd-example-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[envd]\nexample = envd_example_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ENVD_PLUGINS", "example")
    plugins = Plugins.create()
    assert plugins.builder_type("example-socket") is example.SocketDirBuilder
    (info_row,) = [i for i in plugins.infos() if i.name == "example"]
    assert (info_row.distribution, info_row.version) == ("envd-example-plugin", "0.1.0")
    assert info_row.builders == ["example-socket"]


def test_example_imports_nothing_heavy():
    source = (EXAMPLE / "envd_example_plugin" / "__init__.py").read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top_level if "grpc" in line or "buildkit" in line]


@pytest.mark.parametrize("address", ["/run/buildkit", "/run/buildkit/", "/run//buildkit"])
def test_example_normalizes_one_spelling(address):
    assert example.SocketDirBuilder.normalize_address(address) == "/run/buildkit"


def test_runner_through_context_create_and_plugins_ls(cli, register_plugin):
    register_plugin(example, name="example")
    created = cli("context", "create", "--name", "cli", "--builder", "example-socket",
                  "--runner", "example-docker-cli",
                  "--runner-address", "example-docker-cli://unix:///var/run/docker.sock",
                  "--runner-opt", "docker=/usr/local/bin/docker")
    assert created.exit_code == 0, created
    details = json.loads(cli("context", "inspect", "cli", "--no-status").stdout)
    assert details["runner"] == "example-docker-cli"
    assert details["runner_address"] == "unix:///var/run/docker.sock"  # scheme dropped once
    assert details["runner_options"] == {"docker": "/usr/local/bin/docker"}

    typo = cli("context", "create", "--name", "typo", "--builder", "example-socket",
               "--runner", "example-docker-cli", "--runner-opt", "dokker=x")
    assert "runner `example-docker-cli` has no option `dokker`" in assert_one_error(typo, code=2)

    (row,) = [r for r in json.loads(cli("plugins", "ls", "--format", "json").stdout)
              if r["name"] == "example"]
    assert (row["builders"], row["runners"]) == (["example-socket"], ["example-docker-cli"])


def test_runner_without_docker_client_says_so(monkeypatch):
    runner = example.DockerCliRunner(None, {"docker": "no-such-docker-client"})
    with pytest.raises(RunnerError, match="cannot find the docker client `no-such-docker-client`"):
        runner.list_environments()
    status = runner.status(timeout=1)
    assert not status.reachable
    assert status.error is not None and "no-such-docker-client" in status.error


def test_runner_translates_a_spec_into_docker_run_flags():
    spec = EnvironmentSpec(
        name="envd-h9-flags", image="busybox", entrypoint=("sh", "-c"), command=("sleep 1",),
        env={"A": "1"}, working_dir="/w", user="1000",
        mounts=(Mount("/src", "/dst", read_only=True),), ports=(PortMapping(8888),),
        resources=Resources(cpus=1.5, memory_bytes=2**20))
    argv = example.DockerCliRunner(None)._run_args(spec)
    assert argv[-3:] == ["busybox", "-c", "sleep 1"]  # the entrypoint's tail, then the command
    assert argv[argv.index("--entrypoint") + 1] == "sh"
    assert "type=bind,source=/src,target=/dst,readonly" in argv
    assert "127.0.0.1::8888/tcp" in argv
    assert argv[argv.index("--memory") + 1] == "1048576b"
    assert argv[argv.index("--cpus") + 1] == "1.5"
    with pytest.raises(RunnerError, match="cannot give environments GPUs"):
        example.DockerCliRunner(None)._run_args(
            EnvironmentSpec(name="g", image="busybox",
                            resources=Resources(gpus=GPURequest(count=1))))
