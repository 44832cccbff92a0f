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
from _core_support import assert_one_error

from envd_core.plugins import Plugins
from envd_core.testing import (
    BuilderContract,
    RunnerContract,
    StubBuilder,
    StubRunner,
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
    spec = importlib.util.spec_from_file_location(
        "envd_example_plugin", EXAMPLE / "envd_example_plugin" / "__init__.py"
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
