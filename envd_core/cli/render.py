"""Presentation helpers: plain tables (upstream's borderless style) and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

FORMATS = ("table", "json")

_Command = TypeVar("_Command", bound=Callable[..., Any])


def format_option(func: _Command) -> _Command:
    """``--format/-f table|json``, with upstream's message for anything else."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value not in FORMATS:
            raise click.BadParameter(
                f'Argument format only allows "json" and "table", found "{value}"'
            )
        return value

    return click.option(
        "--format",
        "-f",
        "fmt",
        default="table",
        show_default=True,
        metavar="table|json",
        callback=check,
        help="Output format.",
    )(func)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by spaces, upper-case headers, no borders."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines)


def dump_json(data: object, *, pretty: bool = False) -> str:
    """``data`` as JSON text: compact by default, indented with ``pretty``."""
    if pretty:
        return json.dumps(data, indent=2, ensure_ascii=False)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def info(message: str) -> None:
    """A progress or confirmation line, on stderr as upstream's log lines are."""
    click.echo(message, err=True)
