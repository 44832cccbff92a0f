"""Every command alias upstream envd v1.3.4's ``--help`` lists (``build, b``, ``destroy, down,
d``, ``envs, env, e`` ...) runs the same command here; read from the real binary's help."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import click
import pytest
from test_envd_build_support import Envd

from envd_core.cli import create_cli

#: urfave/cli's own `help, h` subcommand: not an envd command
_URFAVE = {"help"}


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> Envd:
    return Envd(config_dir=tmp_path / "config", docker_host=docker_host, ca_bundle=ca_bundle)


def _alias_lines(upstream_envd: str, home: Path, *words: str) -> list[list[str]]:
    """The ``name, alias, ...`` entries of upstream's help for ``words``."""
    env = {**os.environ, "HOME": str(home), "ENVD_ANALYTICS": "false"}
    text = subprocess.run([upstream_envd, *words, "--help"], capture_output=True, text=True,
                          env=env, timeout=60, check=True).stdout
    found = re.findall(r"^\s+([a-z][\w-]*(?:, [a-z][\w-]*)+)\s{2,}\S", text, flags=re.MULTILINE)
    return [names.split(", ") for names in found if names.split(", ")[0] not in _URFAVE]


def test_upstream_aliases_resolve_to_the_same_command(upstream_envd: str, tmp_path: Path) -> None:
    cli = create_cli()
    ctx = click.Context(cli)
    checked: list[str] = []
    for words in ([], ["envs"], ["images"]):
        group: click.Command | None = cli
        for word in words:
            assert isinstance(group, click.Group)
            group = group.get_command(ctx, word)
        assert isinstance(group, click.Group), words
        for names in _alias_lines(upstream_envd, tmp_path, *words):
            ours = {name: group.get_command(ctx, name) for name in names}
            missing = [name for name, command in ours.items() if command is None]
            assert not missing, f"upstream `envd {' '.join([*words, names[0]])}` aliases: {missing}"
            assert len({id(command) for command in ours.values()}) == 1, (words, names)
            checked.extend(" ".join([*words, name]) for name in names)
    # the parse found upstream's entries (a changed help layout must not pass as "no aliases")
    assert {"b", "down", "d", "e", "image", "envs ls", "envs l", "images rm"} <= set(checked)


def test_aliases_run_end_to_end(envd: Envd) -> None:
    assert envd.run("e", "l", "--format", "json").stdout == \
        envd.run("envs", "ls", "--format", "json").stdout
    theirs = envd.run("images", "rm", "envd-no-such-image:x", check=False)
    ours = envd.run("images", "remove", "envd-no-such-image:x", check=False)
    assert theirs.returncode == ours.returncode == 1
    assert theirs.stderr == ours.stderr and theirs.stderr.count("\n") <= 2
