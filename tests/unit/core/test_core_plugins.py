"""Plugin loading and validation: throwaway plugins registered in-process and via entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from abc import abstractmethod
from pathlib import Path
from typing import Any

import pytest

from envd_core import hookimpl
from envd_core.builder import Builder
from envd_core.contexts.store import FileStore
from envd_core.errors import PluginError
from envd_core.plugins import Plugins
from envd_core.testing import EnvdCli, StubBuilder, StubRunner, assert_one_error, make_plugin


class CloudBuilder(Builder):
    name = "cloud"
    summary = "BuildKit on a made-up cloud"
    address_help = "cluster name"

    def connect(self, *, timeout: float) -> Any:
        raise NotImplementedError


class OtherCloudBuilder(CloudBuilder):
    """Same type name as CloudBuilder, from another plugin."""


class NamelessBuilder(Builder):
    def connect(self, *, timeout: float) -> Any:
        raise NotImplementedError


class AbstractBuilder(Builder):
    name = "abstract"

    @abstractmethod
    def connect(self, *, timeout: float) -> Any: ...


class NotABuilder:
    name = "not-a-builder"


# -- builder types end to end ----------------------------------------------------------------
def test_hook_envd_builder_types_end_to_end_through_the_cli(cli, register_plugin):
    """A throwaway plugin's builder type: create, ls, inspect --no-status, rm."""
    register_plugin(make_plugin(builders=[CloudBuilder], runners=[StubRunner]), name="cloudy")
    created = cli("context", "create", "--name", "c1", "--builder", "cloud",
                  "--builder-address", "cloud://eu-1", "--runner", StubRunner.name)
    assert created.exit_code == 0, created
    assert created.stderr == "Context c1 is created\n"

    rows = json.loads(cli("context", "ls", "--format", "json").stdout)
    assert {"context": "c1", "builder": "cloud", "builder_addr": "cloud://eu-1",
            "runner": StubRunner.name, "current": False, "installed": True,
            "origin": "user"} in rows

    inspected = cli("context", "inspect", "c1", "--no-status")
    assert inspected.exit_code == 0, inspected
    details = json.loads(inspected.stdout)
    assert details["builder_address"] == "eu-1"
    assert details["installed"] == {"builder": True, "runner": True}
    assert "status" not in details

    removed = cli("context", "rm", "--name", "c1")
    assert removed.exit_code == 0, removed
    assert removed.stderr == "Context c1 is removed\n"
    assert "c1" not in cli("context", "ls").stdout


def test_registered_plugin_is_unregistered_by_the_fixture(plugins, register_plugin):
    name = register_plugin(make_plugin(builders=[CloudBuilder]))
    assert plugins.provider_of("builders", "cloud") == name
    plugins.unregister(name)
    assert "cloud" not in plugins.builder_types
    assert name not in [info.name for info in plugins.infos()]


def test_duplicate_type_names_name_both_plugins(cli, plugins, register_plugin):
    register_plugin(make_plugin(builders=[CloudBuilder]), name="first-cloud")
    register_plugin(make_plugin(builders=[OtherCloudBuilder]), name="second-cloud")
    with pytest.raises(PluginError) as caught:
        _ = plugins.builder_types
    assert "`first-cloud`" in caught.value.message and "`second-cloud`" in caught.value.message
    assert "`cloud`" in caught.value.message
    result = cli("context", "create", "--name", "x", "--builder", "cloud", "--builder-address", "a")
    stderr = assert_one_error(result)
    assert "first-cloud" in stderr and "second-cloud" in stderr


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (["tcp"], "expected a subclass of envd_core.builder.Builder"),
        ([NotABuilder], "expected a subclass of envd_core.builder.Builder"),
        ([NamelessBuilder], "has no `name`"),
        ([AbstractBuilder], "does not implement required method(s) connect"),
        ({"cloud": CloudBuilder}, "must return a list of classes, got dict"),
    ],
    ids=["non-class", "non-subclass", "nameless", "abstract", "not-a-list"],
)
def test_bad_builder_types_name_the_plugin(cli, plugins, register_plugin, returned, expected):
    register_plugin(make_plugin(builders=returned), name="shoddy")
    with pytest.raises(PluginError) as caught:
        _ = plugins.builder_types
    assert "plugin `shoddy`" in caught.value.message
    assert expected in caught.value.message
    result = cli("context", "create", "--name", "x", "--builder", "cloud", "--builder-address", "a")
    assert "plugin `shoddy`" in assert_one_error(result)


def test_hook_that_raises_names_the_plugin_and_how_to_disable_it(cli, register_plugin):
    def explode() -> list[type]:
        raise RuntimeError("kaput")

    plugin = make_plugin()
    plugin.envd_builder_types = hookimpl(explode)  # type: ignore[attr-defined]
    register_plugin(plugin, name="exploding")
    result = cli("context", "create", "--name", "x", "--builder", "cloud", "--builder-address", "a")
    stderr = assert_one_error(result)
    assert "plugin `exploding` failed in envd_builder_types: RuntimeError: kaput" in stderr
    assert "ENVD_DISABLE_PLUGINS=exploding" in stderr


def test_misspelled_hook_disables_the_plugin_with_a_warning(cli, plugins, register_plugin):
    plugin = make_plugin(builders=[CloudBuilder])
    plugin.envd_buidler_types = hookimpl(lambda: [CloudBuilder])  # type: ignore[attr-defined]
    register_plugin(plugin, name="typo")
    assert "cloud" not in plugins.builder_types  # the whole plugin is left out
    result = cli("context", "ls")
    assert result.exit_code == 0, result
    warnings = [line for line in result.stderr_lines if line.startswith("envd: warning:")]
    assert len(warnings) == 1
    assert "plugin `typo`" in warnings[0] and "envd_buidler_types (misspelled?)" in warnings[0]
    listed = json.loads(cli("plugins", "ls", "--format", "json").stdout)
    (typo,) = [p for p in listed if p["name"] == "typo"]
    assert "envd_buidler_types" in typo["error"]


def test_same_plugin_name_twice_is_refused(plugins, register_plugin):
    register_plugin(make_plugin(builders=[CloudBuilder]), name="twin")
    with pytest.raises(PluginError, match="two plugins are named `twin`"):
        plugins.register(make_plugin(), name="twin")


# -- runner types and stores -----------------------------------------------------------------
def test_hook_envd_runner_types_validated_and_used(cli, plugins, register_plugin):
    register_plugin(make_plugin(runners=[StubRunner, CloudBuilder]), name="mixed")
    with pytest.raises(PluginError, match=r"plugin `mixed` returned .*runner type"):
        _ = plugins.runner_types
    plugins.unregister("mixed")
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner]), name="stub")
    assert plugins.runner_type(StubRunner.name) is StubRunner
    assert plugins.provider_of("runners", StubRunner.name) == "stub"
    result = cli("context", "create", "--name", "r", "--builder", StubBuilder.name,
                 "--builder-address", "x", "--runner", "nomad")
    stderr = assert_one_error(result)
    assert "unknown runner type `nomad` (installed: envd-testing-runner)" in stderr


class AltFileStore(FileStore):
    """A second store type: the same JSON format in another file."""

    name = "alt"
    summary = "test store"

    @property
    def path(self):  # type: ignore[override]
        return self.directory / "alt-contexts.json"


def test_hook_envd_context_stores_selects_store_by_env(cli, plugins, register_plugin,
                                                       envd_config_dir):
    register_plugin(make_plugin(stores=[AltFileStore]), name="altstore")
    assert set(plugins.store_types) == {"file", "sqlite", "alt"}
    result = cli("context", "ls", env={"ENVD_CONTEXT_STORE": "alt"})
    assert result.exit_code == 0, result
    assert (envd_config_dir / "alt-contexts.json").exists()
    assert not (envd_config_dir / "contexts.json").exists()
    missing = cli("context", "ls", env={"ENVD_CONTEXT_STORE": "vault"})
    expected = "unknown context store `vault` (installed: alt, file, sqlite)"
    assert expected in assert_one_error(missing)


def test_hook_envd_build_functions_merged_and_checked(plugins, register_plugin):
    def tensorrt(graph: Any, version: str = "10") -> None: ...

    register_plugin(make_plugin(build_functions={"install.tensorrt": tensorrt}), name="trt")
    assert plugins.build_functions() == {"install.tensorrt": tensorrt}
    register_plugin(make_plugin(build_functions={"install.tensorrt": len}), name="trt2")
    with pytest.raises(PluginError, match="provided by both `trt` and `trt2`"):
        plugins.build_functions()
    plugins.unregister("trt2")
    register_plugin(make_plugin(build_functions={"": len}), name="empty")
    with pytest.raises(PluginError, match="plugin `empty`"):
        plugins.build_functions()


# -- environment switches --------------------------------------------------------------------
def test_envd_trace_hooks_prints_each_call(monkeypatch, capsys, envd_config_dir):
    monkeypatch.setenv("ENVD_TRACE_HOOKS", "1")
    traced = Plugins.create(entry_points=False)
    traced.register(make_plugin(builders=[CloudBuilder]), name="cloudy")
    assert "cloud" in traced.builder_types
    err = capsys.readouterr().err
    assert "envd: trace: envd_builder_types [cloudy] -> " in err
    assert "CloudBuilder" in err


def test_no_trace_without_the_switch(capsys, plugins, register_plugin):
    register_plugin(make_plugin(builders=[CloudBuilder]), name="cloudy")
    assert "cloud" in plugins.builder_types
    assert "trace" not in capsys.readouterr().err


GOOD_PLUGIN = """
    from envd_core import hookimpl
    from envd_core.builder import Builder

    class B(Builder):
        name = {name!r}

        def connect(self, *, timeout):
            raise NotImplementedError

    @hookimpl
    def envd_builder_types():
        return [B]
"""


def test_envd_plugins_and_envd_disable_plugins(entry_point_site, monkeypatch, envd_config_dir):
    entry_point_site("alpha", GOOD_PLUGIN.format(name="alpha-builder"))
    entry_point_site("beta", GOOD_PLUGIN.format(name="beta-builder"))

    def loaded(**env: str) -> set[str]:
        for key in ("ENVD_PLUGINS", "ENVD_DISABLE_PLUGINS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return {info.name for info in Plugins.create().infos() if info.state == "enabled"}

    everything = loaded()
    assert {"core", "alpha", "beta"} <= everything
    assert loaded(ENVD_PLUGINS="alpha") == {"core", "alpha"}
    assert loaded(ENVD_PLUGINS="alpha, beta") == {"core", "alpha", "beta"}
    assert loaded(ENVD_PLUGINS="") == {"core"}  # empty: no entry-point plugin at all
    assert loaded(ENVD_DISABLE_PLUGINS="alpha") == everything - {"alpha"}
    assert loaded(ENVD_PLUGINS="alpha,beta", ENVD_DISABLE_PLUGINS="beta") == {"core", "alpha"}
    loaded(ENVD_PLUGINS="beta")
    assert set(Plugins.create().builder_types) == {"beta-builder"}


BROKEN_PLUGIN = """
    raise ImportError("needs libfoo, which is not installed")
"""


def test_entry_point_plugin_failing_to_import_warns_and_ls_works(entry_point_site, envd_config_dir,
                                                                 monkeypatch):
    entry_point_site("broken", BROKEN_PLUGIN, dist="envd-broken")
    monkeypatch.setenv("ENVD_PLUGINS", "broken")
    cli = EnvdCli(Plugins.create)
    result = cli("context", "ls")
    assert result.exit_code == 0, result
    assert "default (current)" in result.stdout
    (warning,) = result.stderr_lines
    assert warning.startswith("envd: warning: plugin `broken` (envd-broken 0.1) failed to load: ")
    assert "ImportError: needs libfoo, which is not installed" in warning
    assert "ENVD_DISABLE_PLUGINS=broken" in warning

    listed = json.loads(cli("plugins", "ls", "--format", "json").stdout)
    (broken,) = [p for p in listed if p["name"] == "broken"]
    assert broken["distribution"] == "envd-broken" and broken["version"] == "0.1"
    assert "needs libfoo" in broken["error"]

    silenced = cli("context", "ls", env={"ENVD_DISABLE_PLUGINS": "broken"})
    assert silenced.exit_code == 0 and silenced.stderr == "", silenced


def test_broken_entry_point_in_a_real_process(entry_point_site, envd_script, envd_config_dir):
    """The installed console script, a real entry point that raises on import, all plugins on."""
    site = entry_point_site("broken", BROKEN_PLUGIN, dist="envd-broken")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run([envd_script, "context", "ls"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "CONTEXT" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "plugin `broken`" in line]
    assert len(warnings) == 1 and warnings[0].startswith("envd: warning: ")
    assert "Traceback" not in done.stderr


# -- envd plugins ls -------------------------------------------------------------------------
def test_plugins_ls_json_and_table(cli, register_plugin):
    register_plugin(make_plugin(builders=[CloudBuilder], runners=[StubRunner]), name="cloudy")
    as_json = cli("plugins", "ls", "--format", "json")
    assert as_json.exit_code == 0, as_json
    listed = json.loads(as_json.stdout)
    assert listed[0] == {"name": "core", "distribution": "envd-core",
                         "version": listed[0]["version"], "builders": [], "runners": [],
                         "stores": ["file", "sqlite"], "error": None, "state": "enabled",
                         "origin": "built-in", "declares_distribution": None}
    assert {"name": "cloudy", "distribution": None, "version": None, "builders": ["cloud"],
            "runners": [StubRunner.name], "stores": [], "error": None, "state": "enabled",
            "origin": "third-party", "declares_distribution": None} in listed

    as_table = cli("plugins", "ls")
    assert as_table.exit_code == 0, as_table
    header, *rows = as_table.stdout.splitlines()
    assert header.split() == ["PLUGIN", "DISTRIBUTION", "VERSION", "ORIGIN", "STATE",
                              "BUILDERS", "RUNNERS", "STORES", "STATUS"]
    assert rows[0].split()[0] == "core"
    cloudy = next(row for row in rows if row.startswith("cloudy"))
    assert "cloud" in cloudy and cloudy.rstrip().endswith("ok")

    bad = cli("plugins", "ls", "-f", "yaml")
    assert 'Argument format only allows "json" and "table", found "yaml"' in assert_one_error(
        bad, code=2)


def test_a_resident_child_takes_the_ready_manager_only_when_it_equals_a_fresh_one(
        envd_config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``keep_ready`` (the resident server, before forking) registers every entry-point plugin
    once; the next ``create`` takes that manager when nothing disables a plugin, and only once;
    with a switch set it makes a fresh manager that honours it."""
    from envd_core import plugins as plugins_module

    monkeypatch.setattr(plugins_module, "_READY", [])
    Plugins.keep_ready()
    ready = plugins_module._READY[0]
    assert Plugins.create() is ready
    again = Plugins.create()
    assert again is not ready  # taken once: a second manager is a fresh one
    assert sorted(again.builder_types) == sorted(ready.builder_types)

    Plugins.keep_ready()
    ready = plugins_module._READY[0]
    monkeypatch.setenv("ENVD_DISABLE_PLUGINS", "tcp")
    switched = Plugins.create()
    assert switched is not ready
    assert "tcp" not in switched.builder_types and "tcp" in ready.builder_types
    assert plugins_module._READY == []  # a declined manager is dropped, never reused later
