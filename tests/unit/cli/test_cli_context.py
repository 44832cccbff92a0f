"""``envd context …`` through the real CLI (in-process ``run()``), with throwaway plugin types."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from envd_core.builder import Builder, BuilderStatus
from envd_core.options import Option
from envd_core.testing import EnvdCli, StubRunner, assert_one_error, make_plugin


class TcpLike(Builder):
    """Stands in for the envd-tcp plugin's ``tcp`` type (core tests never import plugins)."""

    name = "tcp"
    address_help = "host:port"
    options = (
        Option("tlscacert", "CA certificate", kind="path"),
        Option("insecure", "skip verification", kind="bool"),
        Option("retries", "connection attempts", kind="int", default="3"),
        Option("mode", "how", kind="choice", choices=("fast", "slow")),
    )

    def connect(self, *, timeout: float) -> Any:
        raise NotImplementedError


class DockerLike(StubRunner):
    """Stands in for the docker runner (its lifecycle methods refuse: contexts never run one)."""

    name = "docker"
    options = (Option("network", "network to join"),)


@pytest.fixture
def ctx(cli: EnvdCli, register_plugin: Any) -> EnvdCli:
    """The ``cli`` fixture with builder ``tcp`` and runner ``docker`` installed."""
    register_plugin(make_plugin(builders=[TcpLike], runners=[DockerLike]), name="fake-tcp")
    return cli


def create(cli: EnvdCli, name: str, *extra: str, address: str = "h:1") -> None:
    result = cli("context", "create", "--name", name, "--builder", "tcp",
                 "--builder-address", address, *extra)
    assert result.exit_code == 0, result


def ls_json(cli: EnvdCli) -> list[dict[str, Any]]:
    result = cli("context", "ls", "--format", "json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# -- names and types -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b", "a b", " a", "a\tb", ".hidden", "..", "-x", "x" * 64,
                                  "tab\t", "ünï", "a:b", "a\nb"])
def test_bad_names_rejected(ctx, name):
    result = ctx("context", "create", "--name", name, "--builder", "tcp",
                 "--builder-address", "h:1")
    stderr = assert_one_error(result, code=2)
    assert stderr.startswith("envd: failed to create context: ")
    assert "context name" in stderr
    assert [r["context"] for r in ls_json(ctx)] == ["default"]


def test_empty_name_is_a_usage_error(ctx):
    result = ctx("context", "create", "--name", "", "--builder", "tcp", "--builder-address", "h:1")
    assert 'Required flag "name" not set' in assert_one_error(result, code=2)


@pytest.mark.parametrize("name", ["default", "remote-context", "demo", "my_ctx.v2", "1abc",
                                  "x" * 63, "A-Z"])
def test_upstream_style_names_accepted(ctx, name):
    if name == "default":
        ctx("context", "use", "--name", "default")
        removed = ctx("context", "create", "--name", "other", "--builder", "tcp",
                      "--builder-address", "h:1", "--use")
        assert removed.exit_code == 0
        assert ctx("context", "rm", "--name", "default").exit_code == 0  # upstream: removable
    create(ctx, name)
    assert name in [r["context"] for r in ls_json(ctx)]


def test_name_given_positionally_or_twice(ctx):
    assert ctx("context", "create", "pos", "--builder", "tcp",
               "--builder-address", "h:1").exit_code == 0
    clash = ctx("context", "create", "--name", "a", "b", "--builder", "tcp",
                "--builder-address", "h:1")
    assert "give the context name once" in assert_one_error(clash, code=2)


def test_unknown_builder_and_runner_types_list_installed_ones(ctx):
    result = ctx("context", "create", "--name", "x", "--builder", "nope", "--builder-address", "a")
    stderr = assert_one_error(result)
    assert len(result.stderr_lines) == 1
    assert ("unknown builder type `nope` (installed: tcp): install the plugin that provides it, "
            "or pass `--builder tcp`") in stderr
    known = ctx("context", "create", "--name", "x", "--builder", "kube-pod",
                "--builder-address", "a")
    assert "provided by the package `envd-kube-pod`" in assert_one_error(known)
    runner = ctx("context", "create", "--name", "x", "--builder", "tcp", "--builder-address", "a",
                 "--runner", "envd-server")
    stderr = assert_one_error(runner)
    assert len(runner.stderr_lines) == 1
    assert ("runner type `envd-server` is provided by the package `envd-server-runner`, which is "
            "not installed: run `pip install envd-server-runner`, or pass `--runner docker`"
            ) in stderr
    assert ls_json(ctx)[0]["context"] == "default" and len(ls_json(ctx)) == 1


def test_default_builder_not_installed_says_what_to_install(ctx, register_plugin):
    """Upstream's default builder is docker-container; its plugin may be missing."""
    register_plugin(make_plugin(builders=[UnixLike]), name="fake-unix")
    result = ctx("context", "create", "--name", "x")
    stderr = assert_one_error(result)
    assert result.stderr_lines == [
        ("envd: failed to create context: builder type `docker-container` is provided by the "
         "package `envd-docker-container`, which is not installed: run `pip install "
         "envd-docker-container`, or pass `--builder tcp|unix`")]
    assert "Traceback" not in stderr
    assert [row["context"] for row in ls_json(ctx)] == ["default"]
    # once a plugin provides the type, the same command works with upstream's default address
    register_plugin(make_plugin(builders=[DockerContainerLike]), name="fake-dc")
    assert ctx("context", "create", "--name", "x").exit_code == 0
    (row,) = [r for r in ls_json(ctx) if r["context"] == "x"]
    assert row["builder_addr"] == "docker-container://envd_buildkitd"


def test_stored_context_of_a_missing_type_names_the_package(ctx, plugins):
    from envd_core.contexts.operations import ContextOperations
    from envd_core.errors import ContextError

    ops = ContextOperations(plugins)
    stored = ops.load().get("default")  # moby-worker: not installed in these tests
    with pytest.raises(ContextError) as caught:
        ops.builder_for(stored)
    assert str(caught.value) == (
        "context `default` uses builder type `moby-worker`, provided by the package "
        "`envd-moby`, which is not installed: run `pip install envd-moby`, or use another "
        "context")


class UnixLike(TcpLike):
    name = "unix"
    address_help = "/path/to/socket"


class DockerContainerLike(TcpLike):
    name = "docker-container"
    default_address = "envd_buildkitd"


# -- addresses -------------------------------------------------------------------------------
@pytest.mark.parametrize("typed", ["10.0.0.1:8888", "tcp://10.0.0.1:8888", "TCP://10.0.0.1:8888",
                                   "  tcp://10.0.0.1:8888  "])
def test_address_with_or_without_scheme(ctx, typed):
    create(ctx, "remote", address=typed)
    (row,) = [r for r in ls_json(ctx) if r["context"] == "remote"]
    assert row["builder_addr"] == "tcp://10.0.0.1:8888"


@pytest.mark.parametrize("typed", ["tcp://tcp://h:1", "unix:///run/b.sock", "tcp://", "", "a b"])
def test_bad_addresses_never_stored(ctx, typed):
    result = ctx("context", "create", "--name", "bad", "--builder", "tcp",
                 "--builder-address", typed)
    assert_one_error(result, code=2)
    assert "bad" not in [r["context"] for r in ls_json(ctx)]


def test_runner_address_stored_and_shown(ctx):
    create(ctx, "r", "--runner-address", "docker://unix:///var/run/docker.sock")
    (row,) = [r for r in ls_json(ctx) if r["context"] == "r"]
    assert row["runner_addr"] == "unix:///var/run/docker.sock"


# -- first run, listing ----------------------------------------------------------------------
def test_first_run_creates_current_default(cli, envd_config_dir):
    assert not envd_config_dir.exists()
    result = cli("context", "ls", "--format", "json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout) == [{
        "context": "default", "builder": "moby-worker",
        "builder_addr": "moby-worker://envd_buildkitd", "runner": "docker", "current": True,
        "origin": "user",
        "installed": False,
    }]
    stored = json.loads((envd_config_dir / "contexts.json").read_text())
    assert stored["current"] == "default"
    assert stored["contexts"] == [{"name": "default",
                                   "builder": {"type": "moby-worker", "address": "envd_buildkitd"},
                                   "runner": {"type": "docker"}}]


def test_ls_table_matches_upstream(ctx):
    create(ctx, "remote", "--runner-address", "unix:///d.sock")
    result = ctx("context", "ls")
    assert result.exit_code == 0, result
    header, *rows = result.stdout.splitlines()
    assert header.split("   ")[:1] == ["CONTEXT"]
    assert [c.strip() for c in header.split("   ") if c.strip()] == [
        "CONTEXT", "BUILDER", "BUILDER ADDR", "RUNNER", "RUNNER ADDR"]
    assert rows[0].startswith("default (current)")
    assert "moby-worker (not installed)" in rows[0]
    assert rows[1].split() == ["remote", "tcp", "tcp://h:1", "docker", "unix:///d.sock"]


def test_ls_json_keys_match_upstream(ctx):
    create(ctx, "bare")
    create(ctx, "full", "--runner-address", "unix:///d.sock", "--use")
    result = ctx("context", "ls", "-f", "json")
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("]\n")  # one line
    rows = {r["context"]: r for r in json.loads(result.stdout)}
    upstream = ["context", "builder", "builder_addr", "runner", "runner_addr", "current"]
    assert [k for k in rows["full"] if k in upstream] == upstream
    assert "runner_addr" not in rows["bare"]  # omitempty, as upstream
    assert rows["full"]["current"] is True and rows["bare"]["current"] is False


@pytest.mark.parametrize("fmt", ["yaml", "JSON", ""])
def test_bad_format_is_a_usage_error_with_upstream_message(ctx, fmt):
    result = ctx("context", "ls", "--format", fmt)
    stderr = assert_one_error(result, code=2)
    assert f'Argument format only allows "json" and "table", found "{fmt}"' in stderr


# -- missing plugins -------------------------------------------------------------------------
def test_context_whose_plugin_is_missing_still_lists(cli, plugins, register_plugin):
    name = register_plugin(make_plugin(builders=[TcpLike], runners=[DockerLike]))
    create(cli, "remote")
    plugins.unregister(name)
    listed = cli("context", "ls")
    assert listed.exit_code == 0, listed
    row = next(line for line in listed.stdout.splitlines() if line.startswith("remote"))
    assert "tcp (not installed)" in row and "docker (not installed)" in row
    inspected = cli("context", "inspect", "remote")
    assert inspected.exit_code == 0, inspected
    status = json.loads(inspected.stdout)["status"]
    assert status["reachable"] is False and status["error_kind"] == "plugin-missing"
    assert "provided by the package `envd-tcp`" in status["error"]
    assert json.loads(cli("context", "inspect", "remote", "--no-status").stdout)["installed"] == {
        "builder": False, "runner": False}


# -- which context is in force ---------------------------------------------------------------
def test_precedence_flag_env_project_file_current(ctx, envd_config_dir, monkeypatch):
    for name in ("flagged", "env", "project", "stored"):
        create(ctx, name)
    assert ctx("context", "use", "--name", "stored").exit_code == 0
    work = Path.cwd()
    nested = work / "src" / "pkg"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)

    def show(*args: str, env: dict[str, str | None] | None = None) -> str:
        result = ctx(*args, "context", "show", env=env)
        assert result.exit_code == 0, result
        return result.stdout

    assert show() == "stored\t(from current context)\n"
    (work / ".envd-context").write_text("# which context this project uses\n\n  project  \n")
    assert show() == f"project\t(from project file ({work / '.envd-context'}))\n"
    assert show(env={"ENVD_CONTEXT": "env"}) == "env\t(from ENVD_CONTEXT)\n"
    assert show("--context", "flagged", env={"ENVD_CONTEXT": "env"}) == (
        "flagged\t(from --context flag)\n")
    as_json = ctx("context", "show", "--format", "json", env={"ENVD_CONTEXT": "env"})
    assert json.loads(as_json.stdout) == {"context": "env", "source": "ENVD_CONTEXT",
                                          "detail": None, "origin": "user"}
    # a name that does not exist says where it came from
    missing = ctx("context", "show", env={"ENVD_CONTEXT": "ghost"})
    assert 'context "ghost" (from ENVD_CONTEXT) does not exist' in assert_one_error(missing)
    (nested / ".envd-context").write_text("# nothing here\n")
    empty = ctx("context", "show")
    assert "names no context" in assert_one_error(empty)


def test_use_warns_when_env_overrides(ctx):
    create(ctx, "a")
    result = ctx("context", "use", "--name", "a", env={"ENVD_CONTEXT": "default"})
    assert result.exit_code == 0, result
    assert result.stderr_lines == ['Current context is "a"',
                                   "warning: ENVD_CONTEXT=default overrides the current context"]


# -- upstream messages -----------------------------------------------------------------------
def test_upstream_messages(ctx):
    created = ctx("context", "create", "--name", "demo", "--builder", "tcp",
                  "--builder-address", "h:1", "--use")
    assert created.stderr_lines == ["Context demo is created", 'Current context is "demo"']
    again = ctx("context", "create", "--name", "demo", "--builder", "tcp",
                "--builder-address", "h:1")
    assert assert_one_error(again) == (
        'envd: failed to create context: context "demo" already exists\n')
    rm_current = ctx("context", "rm", "--name", "demo")
    assert assert_one_error(rm_current).startswith(
        'envd: failed to remove context: cannot remove current context "demo"\n')
    used = ctx("context", "use", "--name", "default")
    assert used.stderr == 'Current context is "default"\n'
    assert ctx("context", "rm", "--name", "demo").stderr == "Context demo is removed\n"
    gone = ctx("context", "use", "--name", "demo")
    assert 'failed to use the specified context demo: context "demo" does not exist' in (
        assert_one_error(gone))
    missing = ctx("context", "rm", "--name", "demo")
    assert 'cannot find context "demo"' in assert_one_error(missing)
    no_name = ctx("context", "use")
    assert 'Required flag "name" not set' in assert_one_error(no_name, code=2)


# -- options, update -------------------------------------------------------------------------
def test_typed_options_parsed_and_stored(ctx, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nsecret\n")
    create(ctx, "tls", "--builder-opt", "tlscacert=../ca.pem", "--builder-opt", "insecure=YES",
           "--builder-opt", "retries=05", "--builder-opt", "mode=fast",
           "--runner-opt", "network=host")
    details = json.loads(ctx("context", "inspect", "tls", "--no-status").stdout)
    assert details["builder_options"] == {"tlscacert": str(ca), "insecure": "true",
                                          "retries": "5", "mode": "fast"}
    assert details["runner_options"] == {"network": "host"}


@pytest.mark.parametrize(
    ("opt", "expected"),
    [
        ("nope=1", "builder `tcp` has no option `nope` (known options: "),
        ("retries=many", "option `retries` expects a whole number, got `many`"),
        ("insecure=maybe", "option `insecure` expects true or false, got `maybe`"),
        ("mode=warp", "option `mode` must be one of fast, slow; got `warp`"),
        ("tlscacert=/does/not/exist.pem", "file `/does/not/exist.pem` does not exist"),
        ("novalue", "--builder-opt expects key=value, got `novalue`"),
    ],
)
def test_bad_options_rejected(ctx, opt, expected):
    result = ctx("context", "create", "--name", "x", "--builder", "tcp", "--builder-address",
                 "h:1", "--builder-opt", opt)
    assert expected in assert_one_error(result, code=2)


def test_update_changes_only_what_is_given(ctx, envd_config_dir):
    create(ctx, "u", "--builder-opt", "mode=fast", "--builder-opt", "retries=4",
           "--description", "first")
    result = ctx("context", "update", "u", "--builder-address", "tcp://h:2",
                 "--unset-opt", "mode", "--runner-address", "unix:///d.sock")
    assert result.exit_code == 0, result
    assert result.stderr == "Context u is updated\n"
    details = json.loads(ctx("context", "inspect", "u", "--no-status").stdout)
    assert details["builder_url"] == "tcp://h:2"
    assert details["builder_options"] == {"retries": "4"}
    assert details["runner_address"] == "unix:///d.sock"
    assert details["description"] == "first"
    before = (envd_config_dir / "contexts.json").read_bytes()
    bad = ctx("context", "update", "u", "--builder-address", "tcp://tcp://h:3")
    assert bad.stderr.startswith("envd: failed to update context: ")
    assert_one_error(bad, code=2)
    assert (envd_config_dir / "contexts.json").read_bytes() == before
    ghost = ctx("context", "update", "ghost", "--description", "x")
    assert 'context "ghost" does not exist' in assert_one_error(ghost)


# -- export / import -------------------------------------------------------------------------
def test_export_import_round_trip_keeps_file_options_as_paths(ctx, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("TOP-SECRET-CA-CONTENT")
    create(ctx, "src", "--builder-opt", f"tlscacert={ca}", "--runner-opt", "network=host",
           "--description", "shared builder")
    exported = tmp_path / "src.json"
    done = ctx("context", "export", "src", str(exported))
    assert done.exit_code == 0, done
    text = exported.read_text()
    assert "TOP-SECRET-CA-CONTENT" not in text and str(ca) in text
    assert json.loads(text)["format"] == "envd-context/v1"

    imported = ctx("context", "import", "dst", str(exported), "--use")
    assert imported.exit_code == 0, imported
    assert imported.stderr_lines == ["Context dst is created", 'Current context is "dst"']
    src = json.loads(ctx("context", "inspect", "src", "--no-status").stdout)
    dst = json.loads(ctx("context", "inspect", "dst", "--no-status").stdout)
    for key in ("builder", "builder_address", "runner", "builder_options", "runner_options",
                "description"):
        assert src[key] == dst[key]
    assert dst["builder_options"]["tlscacert"] == str(ca)

    # stdout / stdin
    piped = ctx("context", "export", "src", "-")
    assert piped.exit_code == 0 and piped.stderr == ""
    from_stdin = ctx("context", "import", "piped", "-", input=piped.stdout)
    assert from_stdin.exit_code == 0, from_stdin
    assert "piped" in [r["context"] for r in ls_json(ctx)]

    assert "already exists" in assert_one_error(ctx("context", "export", "src", str(exported)),
                                                code=2)
    dup = ctx("context", "import", "dst", str(exported))
    assert 'context "dst" already exists' in assert_one_error(dup)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert "is not a JSON context export" in assert_one_error(
        ctx("context", "import", "j", str(junk)), code=2)
    assert "not an envd context export" in assert_one_error(
        ctx("context", "import", "j", "-", input='{"format": "other"}'), code=2)
    assert "cannot read" in assert_one_error(
        ctx("context", "import", "j", str(tmp_path / "missing.json")), code=2)


# -- errors and --debug ----------------------------------------------------------------------
class BuggyBuilder(TcpLike):
    name = "buggy"

    @classmethod
    def normalize_address(cls, address: str) -> str:
        return str(1 / 0)


def test_internal_error_is_one_line_and_debug_shows_traceback(ctx, register_plugin):
    register_plugin(make_plugin(builders=[BuggyBuilder]), name="buggy")
    args = ("context", "create", "--name", "b", "--builder", "buggy", "--builder-address", "a")
    stderr = assert_one_error(ctx(*args))
    assert "internal error: ZeroDivisionError" in stderr and "--debug" in stderr
    with pytest.raises(ZeroDivisionError):
        ctx("--debug", *args)
    debug = ctx("--debug", "context", "rm", "--name", "default")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr_lines[-2].startswith("envd: failed to remove context")
    with_env = ctx("context", "rm", "--name", "default", env={"ENVD_DEBUG": "1"})
    assert "Traceback" in with_env.stderr


# -- shell completion ------------------------------------------------------------------------
def test_complete_context_names_function(ctx):
    from envd_core.cli.context import complete_context_names

    create(ctx, "remote-a")
    create(ctx, "remote-b")
    create(ctx, "local")
    names = [item.value for item in complete_context_names(None, None, "rem")]  # type: ignore[arg-type]
    assert names == ["remote-a", "remote-b"]


def test_bash_completion_protocol_in_a_real_process(ctx, envd_script, envd_config_dir):
    create(ctx, "remote-a")
    create(ctx, "remote-b")
    env = {**os.environ, "_ENVD_COMPLETE": "bash_complete",
           "COMP_WORDS": "envd context use --name re", "COMP_CWORD": "4"}
    done = subprocess.run([envd_script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,remote-a", "plain,remote-b"]
    script = subprocess.run([envd_script, "completion", "bash"], capture_output=True, text=True,
                            timeout=60, env=env | {"_ENVD_COMPLETE": ""}, check=False)
    assert script.returncode == 0, script.stderr
    assert "_ENVD_COMPLETE=bash_complete" in script.stdout


# -- probing ---------------------------------------------------------------------------------
class HealthyBuilder(TcpLike):
    """Reports a running daemon without touching the network."""

    name = "healthy"

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        return BuilderStatus(True, version="v0.18.2", platforms=["linux/amd64"], workers=1,
                             latency_ms=1.5)


class CrashingBuilder(TcpLike):
    """A plugin bug in status() must not break the listing."""

    name = "crashing"

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        raise RuntimeError("plugin bug")


def test_ls_status_probes_every_builder(ctx, register_plugin):
    register_plugin(make_plugin(builders=[HealthyBuilder, CrashingBuilder]), name="probes")
    for name, builder in (("up", "healthy"), ("broken", "crashing")):
        assert ctx("context", "create", "--name", name, "--builder", builder,
                   "--builder-address", "h:1").exit_code == 0
    table_out = ctx("context", "ls", "--status")
    assert table_out.exit_code == 0, table_out
    header, *rows = table_out.stdout.splitlines()
    assert header.split()[-1] == "STATUS"
    by_name = {row.split()[0]: row for row in rows}
    assert by_name["up"].endswith("running (v0.18.2, 1.5 ms)")
    assert by_name["broken"].endswith("error: RuntimeError: plugin bug")
    assert "plugin-missing" in by_name["default"]  # moby-worker is not installed here
    rows_json = {r["context"]: r for r in json.loads(
        ctx("context", "ls", "--status", "-f", "json").stdout)}
    assert rows_json["up"]["status"]["reachable"] is True
    assert rows_json["up"]["status"]["workers"] == 1
    assert rows_json["broken"]["status"]["error_kind"] == "error"
    inspected = json.loads(ctx("context", "inspect", "up").stdout)
    assert inspected["status"]["version"] == "v0.18.2"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(cli, shell):
    result = cli("completion", shell)
    assert result.exit_code == 0, result
    assert "_ENVD_COMPLETE" in result.stdout
    bad = cli("completion", "powershell")
    assert "powershell" in assert_one_error(bad, code=2)


def test_trace_hooks_through_the_cli(monkeypatch, envd_config_dir):
    from envd_core.plugins import Plugins

    monkeypatch.setenv("ENVD_TRACE_HOOKS", "1")
    traced = Plugins.create(entry_points=False)
    traced.register(make_plugin(builders=[TcpLike], runners=[DockerLike]), name="fake-tcp")
    result = EnvdCli(lambda: traced)("context", "create", "--name", "t", "--builder", "tcp",
                                     "--builder-address", "h:1")
    assert result.exit_code == 0, result
    trace = [line for line in result.stderr_lines if line.startswith("envd: trace: ")]
    assert any("envd_builder_types [fake-tcp] -> " in line for line in trace)
    assert any("envd_runner_types [fake-tcp] -> " in line for line in trace)
    assert result.stderr_lines[-1] == "Context t is created"
