"""The vendor hooks, team contexts and `envd plugins enable/disable`, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from envd_core import hookimpl
from envd_core.contexts.model import Context
from envd_core.errors import PluginError
from envd_core.plugins import Plugins, distribution
from envd_core.testing import EnvdCli, StubBuilder, StubRunner, assert_one_error, make_plugin

SHARED = Context(name="shared", builder=StubBuilder.name, builder_address="farm:1",
                 runner=StubRunner.name, description="the team's builder")


def vendor(**hooks: Any) -> object:
    """A throwaway plugin whose hooks return the given values."""
    plugin = SimpleNamespace()
    for hook, value in hooks.items():
        setattr(plugin, hook, hookimpl(lambda value=value: value))
    return plugin


@pytest.fixture
def team_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path) -> Path:
    # after envd_config_dir, which clears every ENVD_* variable
    folder = tmp_path / "contexts.d"
    folder.mkdir()
    monkeypatch.setenv("ENVD_TEAM_CONTEXTS_DIR", str(folder))
    return folder


@pytest.fixture
def stub_types(register_plugin: Any) -> None:
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner]), name="stubs")


# -- envd_default_contexts / envd_default_current ---------------------------------------------
def test_hook_envd_default_contexts_seed_a_fresh_store_beside_core_default(
        cli: Any, register_plugin: Any, stub_types: None, envd_config_dir: Path) -> None:
    laptop = Context(name="laptop", builder=StubBuilder.name, builder_address="x")
    register_plugin(vendor(envd_default_contexts=[laptop]), name="acme")
    rows = json.loads(cli("context", "ls", "--format", "json").stdout)
    assert [(r["context"], r["current"], r["origin"]) for r in rows] == [
        ("default", True, "user"), ("laptop", False, "user")]
    stored = json.loads((envd_config_dir / "contexts.json").read_text())
    assert [c["name"] for c in stored["contexts"]] == ["default", "laptop"]
    # seeded contexts are the user's: editable and removable
    assert cli("context", "rm", "laptop").exit_code == 0


def test_hook_envd_default_contexts_never_change_an_existing_store(
        cli: Any, register_plugin: Any, stub_types: None) -> None:
    assert cli("context", "ls").exit_code == 0  # the store exists from here on
    register_plugin(vendor(envd_default_contexts=[
        Context(name="late", builder=StubBuilder.name, builder_address="x")]), name="late")
    names = [r["context"] for r in json.loads(cli("context", "ls", "-f", "json").stdout)]
    assert names == ["default"]


def test_hook_envd_default_contexts_name_twice_is_an_error(plugins: Plugins,
                                                           register_plugin: Any) -> None:
    register_plugin(vendor(envd_default_contexts=[Context(name="default", builder="b",
                                                          builder_address="a")]), name="dup")
    with pytest.raises(PluginError, match="`core` and `dup`"):
        plugins.initial_contexts()


def test_hook_envd_default_current_picks_a_team_context_distribution_first(
        cli: Any, register_plugin: Any, stub_types: None) -> None:
    register_plugin(vendor(envd_team_contexts=[SHARED], envd_default_current="shared"),
                    name="acme")
    shown = cli("context", "show")
    assert shown.stdout == "shared\t(from current context; read-only team context, plugin acme)\n"


def test_hook_envd_default_current_unknown_name_names_the_plugin(
        cli: Any, register_plugin: Any) -> None:
    register_plugin(vendor(envd_default_current="nowhere"), name="typo")
    message = assert_one_error(cli("context", "ls"))
    assert "plugin `typo`: envd_default_current returned `nowhere`" in message


# -- envd_team_contexts and the system directory ------------------------------------------------
def test_hook_envd_team_contexts_usable_not_editable(
        cli: Any, register_plugin: Any, stub_types: None, envd_config_dir: Path) -> None:
    register_plugin(vendor(envd_team_contexts=[SHARED]), name="acme")
    table = cli("context", "ls").stdout.splitlines()
    assert table[0].split()[-1] == "ORIGIN"
    assert table[2].split()[0] == "shared" and table[2].endswith("plugin acme")
    assert cli("context", "use", "shared").exit_code == 0
    stored = json.loads((envd_config_dir / "contexts.json").read_text())
    assert stored["current"] == "shared"
    assert [c["name"] for c in stored["contexts"]] == ["default"]  # used, never copied
    removed = assert_one_error(cli("context", "rm", "shared"))
    assert removed.startswith('envd: failed to remove context: context "shared" is a read-only')
    message = assert_one_error(cli("context", "update", "shared", "--description", "x"))
    assert message.splitlines() == [
        ('envd: failed to update context: context "shared" is a read-only team context '
         "(plugin acme) and cannot be updated"),
        "hint: make your own copy: envd context export shared | envd context import my-shared -"]
    refused = assert_one_error(cli("context", "create", "shared", "--builder", StubBuilder.name,
                                   "--builder-address", "y", "--runner", StubRunner.name))
    assert "is a team context (plugin acme); choose another name" in refused
    # the documented way out: copy it
    exported = cli("context", "export", "shared")
    copied = cli("context", "import", "mine", "-", input=exported.stdout)
    assert copied.exit_code == 0, copied


def test_team_directory_files_and_a_broken_file(
        cli: Any, stub_types: None, team_dir: Path) -> None:
    (team_dir / "10-farm.json").write_text(json.dumps(
        {"format": "envd-team-contexts/v1", "contexts": [SHARED.to_json()]}))
    (team_dir / "20-broken.json").write_text("{not json")
    (team_dir / "notes.txt").write_text("ignored: not *.json")
    result = cli("context", "ls", "--format", "json")
    assert result.exit_code == 0
    (row,) = [r for r in json.loads(result.stdout) if r["context"] == "shared"]
    assert row["origin"] == f"file {team_dir / '10-farm.json'}"
    (warning,) = result.stderr_lines
    assert warning.startswith(f"envd: warning: team context file `{team_dir / '20-broken.json'}`")
    assert warning.endswith("its contexts are left out")


def test_team_directory_beats_a_plugin_and_a_user_context_hides_a_later_team_one(
        cli: Any, register_plugin: Any, stub_types: None, team_dir: Path) -> None:
    created = cli("context", "create", "mine", "--builder", StubBuilder.name,
                  "--builder-address", "u", "--runner", StubRunner.name)
    assert created.exit_code == 0
    register_plugin(vendor(envd_team_contexts=[SHARED]), name="acme")
    other = Context(name="shared", builder=StubBuilder.name, builder_address="admin:9",
                    runner=StubRunner.name)
    mine = Context(name="mine", builder=StubBuilder.name, builder_address="team:1",
                   runner=StubRunner.name)
    (team_dir / "a.json").write_text(json.dumps(
        {"format": "envd-team-contexts/v1", "contexts": [other.to_json(), mine.to_json()]}))
    rows = {r["context"]: r for r in json.loads(cli("context", "ls", "-f", "json").stdout)}
    assert rows["shared"]["builder_addr"].endswith("admin:9")
    assert rows["mine"]["origin"] == "user" and rows["mine"]["builder_addr"].endswith("u")


def test_current_team_context_gone_falls_back_to_default_with_a_warning(
        cli: Any, register_plugin: Any, stub_types: None, plugins: Plugins) -> None:
    name = register_plugin(vendor(envd_team_contexts=[SHARED]), name="acme")
    assert cli("context", "use", "shared").exit_code == 0
    plugins.unregister(name)
    shown = cli("context", "show")
    assert shown.stdout == "default\t(from current context)\n"
    assert shown.stderr_lines == [('envd: warning: current context "shared" is no longer '
                                   'defined; using "default" (choose one with `envd context use '
                                   'NAME`)')]


# -- envd_commands ----------------------------------------------------------------------------
def test_hook_envd_commands_lazy_and_checked(cli: Any, register_plugin: Any,
                                             tmp_path: Path, monkeypatch: Any) -> None:
    module = "envd_vendor_cmd_test"
    (tmp_path / f"{module}.py").write_text(
        "import click\n\n@click.group()\ndef acme():\n    'Acme tools.'\n\n"
        "@acme.command()\n@click.pass_obj\ndef hello(app):\n"
        "    click.echo('hello from ' + str(app.plugins.distribution()))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_plugin(vendor(envd_commands={"acme": f"{module}:acme"},
                           envd_distribution={"name": "Acme", "version": "1"}), name="acme")
    assert cli("context", "ls").exit_code == 0
    assert module not in sys.modules  # a built-in command never imports a plugin's commands
    assert cli("acme", "hello").stdout == "hello from Acme 1\n"
    assert "acme" in cli("--help").stdout
    register_plugin(vendor(envd_commands={"context": f"{module}:acme"}), name="grabby")
    assert "plugin `grabby` adds command `context`, which is built in" in assert_one_error(
        cli("acme", "hello"))


def test_a_plugin_command_cannot_take_an_alias_name(cli: Any, register_plugin: Any,
                                                    tmp_path: Path, monkeypatch: Any) -> None:
    module = "envd_vendor_alias_test"
    (tmp_path / f"{module}.py").write_text("import click\n\n@click.command()\ndef b():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_plugin(vendor(envd_commands={"b": f"{module}:b"}), name="shadow")
    # `b` is upstream's alias of build: it builds, and the plugin's claim is refused when read
    assert "plugin `shadow` adds command `b`, which is built in" in assert_one_error(
        cli("no-such-command"))


def test_hook_envd_commands_broken_target_is_one_line(cli: Any, register_plugin: Any) -> None:
    register_plugin(vendor(envd_commands={"gone": "no_such_module_xyz:cmd"}), name="acme")
    message = assert_one_error(cli("gone"))
    assert message.startswith("envd: command `no_such_module_xyz:cmd` of a plugin cannot be "
                              "loaded: ")


# -- envd_option_defaults ---------------------------------------------------------------------
def test_hook_envd_option_defaults_fill_what_the_context_leaves_unset(
        cli: Any, plugins: Plugins, register_plugin: Any, stub_types: None,
        tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    register_plugin(vendor(envd_option_defaults={
        f"builder.{StubBuilder.name}": {"ca-bundle": str(bundle)}}), name="acme")
    from envd_core.contexts.operations import ContextOperations

    ops = ContextOperations(plugins)
    plain = Context(name="p", builder=StubBuilder.name, builder_address="x")
    assert ops.builder_for(plain).option_values == {"ca-bundle": str(bundle)}
    own = tmp_path / "own.pem"
    own.write_text("pem")
    mine = Context(name="m", builder=StubBuilder.name, builder_address="x",
                   builder_options={"ca-bundle": str(own)})
    assert ops.builder_for(mine).option_values == {"ca-bundle": str(own)}  # the context wins
    created = cli("context", "create", "plain", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", StubRunner.name)
    assert created.exit_code == 0, created
    shown = json.loads(cli("context", "inspect", "plain", "--no-status").stdout)
    assert shown["builder_options"] == {}  # the store keeps only what the user set
    assert shown["options_in_force"] == {"builder": {"ca-bundle": str(bundle)}, "runner": {}}


def test_hook_envd_option_defaults_bad_value_names_the_plugin(
        plugins: Plugins, register_plugin: Any, stub_types: None) -> None:
    register_plugin(vendor(envd_option_defaults={
        f"builder.{StubBuilder.name}": {"ca-bundle": "/no/such/bundle.pem"}}), name="acme")
    declared = StubBuilder.options_declared()
    with pytest.raises(PluginError, match="plugin `acme`: bad default option for builder"):
        plugins.option_defaults("builder", StubBuilder.name, declared)


def test_hook_envd_option_defaults_set_build_file_limits(
        plugins: Plugins, register_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from envd_core.envdfile.lang.limits import LIMITS_ENV, limits_in_force

    register_plugin(vendor(envd_option_defaults={"build-file": {"memory": "2GiB",
                                                                "depth": 1500}}), name="acme")
    defaults = plugins.build_file_limits()
    assert defaults == {"memory": "2GiB", "depth": "1500"}
    monkeypatch.setenv(LIMITS_ENV, "depth=3000")
    limits = limits_in_force(defaults)
    assert (limits.memory, limits.depth) == (2 * 1024**3, 3000)  # the variable wins
    register_plugin(vendor(envd_option_defaults={"build-file": {"memory": "1GiB"}}),
                    name="other")
    with pytest.raises(PluginError, match="`memory` is given by both `acme` and `other`"):
        plugins.build_file_limits()


# -- envd_distribution ------------------------------------------------------------------------
def test_hook_envd_distribution_named_once(cli: Any, plugins: Plugins,
                                           register_plugin: Any) -> None:
    assert distribution(plugins) is None  # stock envd
    register_plugin(vendor(envd_distribution={"name": "Acme envd", "version": "2026.11"}),
                    name="acme")
    found = distribution(plugins)
    assert found is not None and str(found) == "Acme envd 2026.11" and found.plugin == "acme"
    listing = cli("plugins", "ls")
    assert listing.stdout.splitlines()[0] == "Distribution: Acme envd 2026.11 (plugin acme)"
    assert "distribution: Acme envd 2026.11" in cli("version").stdout.splitlines()
    named = json.loads(cli("version", "--format", "json").stdout)["distribution"]
    assert (named["name"], named["version"], named["plugin"]) == ("Acme envd", "2026.11", "acme")
    rows = {r["name"]: r for r in json.loads(cli("plugins", "ls", "-f", "json").stdout)}
    assert rows["acme"]["origin"] == "distribution"
    assert rows["acme"]["declares_distribution"]["name"] == "Acme envd"
    register_plugin(vendor(envd_distribution={"name": "Other"}), name="other")
    with pytest.raises(PluginError, match="two distributions are installed"):
        distribution(plugins)


# -- envd plugins enable / disable ------------------------------------------------------------
GOOD = """
from envd_core import hookimpl

@hookimpl
def envd_distribution():
    return {"name": "Tiny"}
"""


def test_plugins_disable_enable_persisted(entry_point_site: Any, envd_config_dir: Path) -> None:
    entry_point_site("tiny", GOOD, dist="tiny-envd")
    cli = EnvdCli(Plugins.create)
    assert str(distribution()) == "Tiny 0.1"
    done = cli("plugins", "disable", "tiny")
    assert done.exit_code == 0 and done.stderr == "Plugin tiny is disabled\n"
    stored = json.loads((envd_config_dir / "plugins.json").read_text())
    assert stored == {"schema": 1, "disabled": ["tiny"]}
    assert distribution() is None
    rows = {r["name"]: r for r in json.loads(cli("plugins", "ls", "-f", "json").stdout)}
    assert rows["tiny"]["state"] == "disabled"
    assert cli("plugins", "disable", "tiny").stderr == "Plugin tiny was already disabled\n"
    assert cli("plugins", "enable", "tiny").stderr == "Plugin tiny is enabled\n"
    assert str(distribution()) == "Tiny 0.1"
    assert "cannot be disabled" in assert_one_error(cli("plugins", "disable", "core"), code=2)
    assert "no installed plugin is named `nope`" in assert_one_error(
        cli("plugins", "disable", "nope"))


def test_plugins_json_corrupt_is_one_line_and_kept(entry_point_site: Any,
                                                   envd_config_dir: Path) -> None:
    entry_point_site("tiny", GOOD, dist="tiny-envd")
    envd_config_dir.mkdir(parents=True)
    (envd_config_dir / "plugins.json").write_text("{oops")
    message = assert_one_error(EnvdCli(Plugins.create)("plugins", "ls"))
    assert "plugin settings" in message and "are corrupt" in message
    assert (envd_config_dir / "plugins.json").read_text() == "{oops"


def test_plugins_disable_concurrent_writers_lose_nothing(envd_config_dir: Path) -> None:
    """Twenty processes each disable one name at once: all twenty names are stored."""
    code = ("import sys; from envd_core.plugin_config import set_disabled; "
            "set_disabled(sys.argv[1], True)")
    env = {**os.environ, "ENVD_CONFIG_DIR": str(envd_config_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"p{i}"], env=env)
             for i in range(20)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    stored = json.loads((envd_config_dir / "plugins.json").read_text())
    assert stored["disabled"] == sorted(f"p{i}" for i in range(20))


def test_completion_offers_team_directory_contexts(team_dir: Path, envd_config_dir: Path) -> None:
    from envd_core.cli.context import complete_context_names

    (team_dir / "farm.json").write_text(json.dumps(
        {"format": "envd-team-contexts/v1", "contexts": [SHARED.to_json()]}))
    items = complete_context_names(None, None, "")  # type: ignore[arg-type]
    assert [item.value for item in items] == ["default", "shared"]
    assert not envd_config_dir.exists()  # completion still writes nothing

