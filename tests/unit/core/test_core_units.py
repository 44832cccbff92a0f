"""Library-level units: options, names, resolution, the context record, base classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd_core.builder import Builder, BuilderStatus, strip_scheme
from envd_core.contexts.model import Context, ContextSet, default_context
from envd_core.contexts.resolve import find_project_file, resolve
from envd_core.contexts.validate import MAX_NAME_LENGTH, validate_name
from envd_core.errors import (
    BuilderError,
    ContextError,
    EnvdError,
    PluginError,
    StoreError,
    UsageError,
    ValidationError,
)
from envd_core.options import Option, parse_options, parse_pairs
from envd_core.runner import Runner
from envd_core.testing import StubBuilder, StubRunner


# -- errors ----------------------------------------------------------------------------------
def test_exit_codes():
    assert EnvdError("x").exit_code == 1
    assert UsageError("x").exit_code == 2 and ValidationError("x").exit_code == 2
    for cls in (PluginError, ContextError, StoreError, BuilderError):
        assert issubclass(cls, EnvdError) and cls("x").exit_code == 1
    error = ContextError("what", hint="fix")
    assert (str(error), error.hint) == ("what", "fix")


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "raw", "stored", "value"),
    [
        ("bool", "YES", "true", True), ("bool", "", "true", True), ("bool", "off", "false", False),
        ("int", " 007 ", "7", 7), ("int", "-3", "-3", -3), ("str", " x y ", "x y", "x y"),
    ],
)
def test_option_parse_and_convert(kind, raw, stored, value):
    opt = Option("o", "help", kind=kind)
    assert opt.parse(raw) == stored
    assert opt.convert(stored) == value


def test_path_option_is_stored_by_reference(tmp_path):
    (tmp_path / "ca.pem").write_text("secret")
    opt = Option("ca", "CA", kind="path")
    assert opt.parse("ca.pem", cwd=str(tmp_path)) == str(tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="needs a file path"):
        opt.parse("  ")
    with pytest.raises(ValidationError, match="does not exist"):
        opt.parse("missing.pem", cwd=str(tmp_path))


def test_parse_pairs_and_options():
    assert parse_pairs(["a=1", "b==2", "a=3", "c="], flag="--x") == {"a": "3", "b": "=2", "c": ""}
    for bad in ("novalue", "=v", " =v"):
        with pytest.raises(ValidationError, match="--x expects key=value"):
            parse_pairs([bad], flag="--x")
    declared = [Option("mode", "m", kind="choice", choices=("a", "b"))]
    assert parse_options(declared, {"mode": "a"}, owner="builder `t`") == {"mode": "a"}
    unknown = r"builder `t` has no option `x` \(known options: mode\)"
    with pytest.raises(ValidationError, match=unknown):
        parse_options(declared, {"x": "1"}, owner="builder `t`")
    with pytest.raises(ValidationError, match=r"known options: none"):
        parse_options([], {"x": "1"}, owner="runner `r`")


# -- names -----------------------------------------------------------------------------------
def test_name_length_boundary():
    assert validate_name("a" * MAX_NAME_LENGTH)
    with pytest.raises(ValidationError, match=r"too long \(64 > 63"):
        validate_name("a" * 64)
    with pytest.raises(ValidationError) as caught:
        validate_name("a" * 500)
    assert len(caught.value.message) < 200  # the echo of a huge name is shortened


def test_control_characters_are_escaped_in_the_message():
    with pytest.raises(ValidationError) as caught:
        validate_name("a\x1b[31mb")
    assert "\x1b" not in caught.value.message and "\\x1b" in caught.value.message


# -- the context record ----------------------------------------------------------------------
def test_context_json_round_trip_and_omissions():
    full = Context(name="n", builder="tcp", builder_address="h:1", runner="docker",
                   runner_address="unix:///d.sock", builder_options={"b": "2", "a": "1"},
                   runner_options={"x": "y"}, description="d")
    assert Context.from_json(full.to_json(), where="t") == full
    assert list(full.to_json()["builder"]["options"]) == ["a", "b"]  # stable order
    bare = default_context().to_json()
    assert bare == {"name": "default",
                    "builder": {"type": "moby-worker", "address": "envd_buildkitd"},
                    "runner": {"type": "docker"}}
    assert full.builder_url == "tcp://h:1"


@pytest.mark.parametrize("data", [None, {}, {"name": "n"}, {"name": 1, "builder": {"type": "t"}},
                                  {"name": "n", "builder": {"type": "t", "options": []}}])
def test_malformed_entry_names_where(data):
    with pytest.raises(StoreError, match=r"^somewhere: malformed context entry"):
        Context.from_json(data, where="somewhere")


def test_context_set_operations():
    contexts = ContextSet()
    contexts.add(default_context())
    with pytest.raises(ContextError, match='context "default" already exists'):
        contexts.add(default_context())
    contexts.current = "default"
    with pytest.raises(ContextError, match='cannot remove current context "default"'):
        contexts.remove("default")
    with pytest.raises(ContextError, match='context "x" does not exist') as caught:
        contexts.use("x")
    assert caught.value.hint == "known contexts: default"


# -- resolution ------------------------------------------------------------------------------
def make_set(*names: str, current: str | None = None) -> ContextSet:
    contexts = ContextSet()
    for name in names:
        contexts.add(Context(name=name, builder="tcp", builder_address="h:1"))
    contexts.current = current
    return contexts


def test_resolve_order(tmp_path):
    contexts = make_set("f", "e", "p", "c", current="c")
    (tmp_path / ".envd-context").write_text("p\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert resolve(contexts, flag="f", environ={"ENVD_CONTEXT": "e"}, cwd=deep).source == (
        "--context flag")
    assert resolve(contexts, environ={"ENVD_CONTEXT": "e"}, cwd=deep).context.name == "e"
    found = resolve(contexts, environ={"ENVD_CONTEXT": ""}, cwd=deep)
    assert (found.context.name, found.source, found.detail) == (
        "p", "project file", str(tmp_path / ".envd-context"))
    assert find_project_file(deep) == tmp_path / ".envd-context"
    (tmp_path / ".envd-context").unlink()
    assert resolve(contexts, environ={}, cwd=deep).reason == "current context"


def test_resolve_without_current(tmp_path):
    with pytest.raises(ContextError, match="no current context"):
        resolve(make_set("a"), environ={}, cwd=tmp_path)
    with pytest.raises(ContextError, match="no current context"):
        resolve(make_set("a", current="gone"), environ={}, cwd=tmp_path)


def test_project_file_that_is_a_directory_is_ignored(tmp_path: Path):
    (tmp_path / ".envd-context").mkdir()
    assert find_project_file(tmp_path) != tmp_path / ".envd-context"


# -- base classes ----------------------------------------------------------------------------
def test_strip_scheme_removes_exactly_one():
    assert strip_scheme("tcp://tcp://h:1", "tcp") == "tcp://h:1"
    assert strip_scheme(" TCP://h:1 ", "tcp") == "h:1"
    assert strip_scheme("h:1", "tcp") == "h:1"


def test_builder_defaults():
    builder = StubBuilder("addr", {"x": "1"})
    assert builder.url == "envd-testing-builder://addr"
    assert builder.option_values == {"x": "1"}
    with pytest.raises(KeyError):
        builder.option("x")  # undeclared options are not readable
    with pytest.raises(ValidationError, match="does not take `other://` addresses"):
        StubBuilder.normalize_address("other://h")
    builder.bootstrap()
    builder.remove()
    assert Builder.can_bootstrap is False and "image" in Builder.exporters


def test_runner_defaults():
    runner = StubRunner(None)
    assert StubRunner.normalize_address("envd-testing-runner://h") == "h"
    with pytest.raises(ValidationError, match="whitespace"):
        Runner.normalize_address("a b")
    with pytest.raises(EnvdError, match="cannot load images"):
        runner.load_image(None)  # type: ignore[arg-type]
    with pytest.raises(EnvdError, match="cannot push images"):
        runner.push_image("x")


def test_builder_status_summary():
    assert BuilderStatus(True, version="v0.18.2").summary == "running v0.18.2"
    assert BuilderStatus(True).summary == "running"
    assert BuilderStatus(False, error_kind="refused").summary == "error: refused"
    assert BuilderStatus(False).to_json()["reachable"] is False
