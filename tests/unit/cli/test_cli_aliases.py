"""Upstream envd's command aliases: each resolves to its command everywhere a command name is
read (click, the fast path, the resident's allowlist), and ``--help`` shows them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from envd_core.cli import COMMANDS, aliases, create_cli
from envd_core.cli.fast import _parse
from envd_core.resident.client import eligible


@pytest.fixture(scope="module")
def cli() -> click.Group:
    return create_cli()


def _resolve(cli: click.Group, words: list[str]) -> click.Command | None:
    ctx = click.Context(cli)
    command: click.Command | None = cli
    for word in words:
        if not isinstance(command, click.Group):
            return None
        command = command.get_command(ctx, word)
    return command


def test_every_alias_names_an_existing_command_and_hides_none() -> None:
    for alias, target in aliases.TOP.items():
        assert target in COMMANDS and alias not in COMMANDS, alias
    from envd_core.cli.envs import envs
    from envd_core.cli.images import images

    for group, table in ((envs, aliases.ENVS), (images, aliases.IMAGES)):
        for alias, target in table.items():
            assert target in group.commands and alias not in group.commands, (group.name, alias)


@pytest.mark.parametrize(("typed", "meant"), [
    (["b"], ["build"]), (["u"], ["up"]), (["c"], ["run"]), (["d"], ["down"]),
    (["destroy"], ["down"]), (["env", "ls"], ["envs", "ls"]), (["e", "l"], ["envs", "ls"]),
    (["envs", "list"], ["envs", "ls"]), (["envs", "d"], ["envs", "describe"]),
    (["image", "ls"], ["images", "ls"]), (["images", "rm"], ["images", "remove"]),
    (["images", "r"], ["images", "remove"]), (["images", "d"], ["images", "describe"]),
    (["i"], ["init"]), (["n"], ["new"]), (["p"], ["pause"]), (["r"], ["resume"]),
    (["v"], ["version"]),
])
def test_an_alias_runs_its_command(cli: click.Group, typed: list[str], meant: list[str]) -> None:
    found = _resolve(cli, typed)
    assert found is not None and found is _resolve(cli, meant)
    assert aliases.canonical(typed) == meant


def test_unknown_words_stay_unknown(cli: click.Group) -> None:
    assert _resolve(cli, ["bb"]) is None
    assert _resolve(cli, ["envs", "rm"]) is None  # `rm` is an alias in images only
    assert aliases.canonical(["context", "d"]) == ["context", "d"]


def test_help_shows_aliases_beside_names(cli: click.Group) -> None:
    top = CliRunner().invoke(cli, ["--help"]).output
    assert "  build, b " in top and "  down, destroy, d " in top and "  envs, env, e " in top
    assert "  context " in top and "  destroy " not in top  # aliases are not listed as commands
    sub = CliRunner().invoke(cli, ["image", "--help"]).output
    assert "  remove, r, rm " in sub and "  ls, list, l " in sub
    assert "\n  list " not in sub


def test_the_fast_path_serves_upstream_spellings() -> None:
    assert _parse(["env", "ls"]) == _parse(["envs", "ls"]) == ("envs", "table", None, None)
    assert _parse(["e", "l", "-f", "json"]) == ("envs", "json", None, None)
    assert _parse(["envs", "d"]) is None  # describe is not on the fast path


@pytest.mark.parametrize(("argv", "served"), [
    (["b"], True), (["destroy", "x"], True), (["d"], True), (["c", "--detach"], True),
    (["u"], False), (["u", "--detach"], True), (["i"], False), (["image", "rm", "x"], True),
])
def test_the_resident_reads_aliases_as_their_commands(argv: list[str], served: bool) -> None:
    assert eligible(argv, {}) is served
