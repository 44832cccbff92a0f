"""``envd plugins``: what is installed and what each plugin provides."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from envd_core.cli.render import dump_json, format_option, table

if TYPE_CHECKING:
    from envd_core.cli import App


@click.group()
def plugins() -> None:
    """Inspect envd plugins."""


@plugins.command("ls")
@format_option
@click.pass_obj
def ls(app: App, fmt: str) -> None:
    """List every plugin, its distribution and version, and the types it provides."""
    infos = app.plugins.infos()
    if fmt == "json":
        click.echo(dump_json([i.to_json() for i in infos]))
        return
    rows = [
        [
            i.name,
            i.distribution or "-",
            i.version or "-",
            ", ".join(i.builders) or "-",
            ", ".join(i.runners) or "-",
            ", ".join(i.stores) or "-",
            f"error: {i.error}" if i.error else "ok",
        ]
        for i in infos
    ]
    click.echo(table(
        ["plugin", "distribution", "version", "builders", "runners", "stores", "status"], rows
    ))
