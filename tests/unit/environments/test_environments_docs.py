"""docs/environments.md names every environment command and each of its flags."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import pytest

from envd_core.cli import COMMANDS

DOC = Path(__file__).resolve().parents[3] / "docs" / "environments.md"
OURS = ["up", "run", "sync", "down", "envs", "exec", "pause", "resume", "top", "images",
        "version"]


def _command(name: str) -> click.Command:
    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", OURS)
def test_every_command_and_flag_is_documented(name: str) -> None:
    text = DOC.read_text()
    assert re.search(rf"^#+ .*`envd {name}\b", text, flags=re.MULTILINE), name
    command = _command(name)
    subcommands = getattr(command, "commands", {})
    for sub_name, sub in [(name, command), *subcommands.items()]:
        for param in sub.params:
            if isinstance(param, click.Option) and not param.hidden and param.opts[0] != "--help":
                assert param.opts[0] in text, f"{name} {sub_name} {param.opts[0]}"
