"""``envd acme``: Acme's own commands, imported only when ``envd acme`` runs."""

from __future__ import annotations

import json
from typing import Any

import click

import acme_envd


@click.group()
def acme() -> None:
    """Acme's envd commands."""


@acme.command("info")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def info(app: Any, fmt: str) -> None:
    """Show the distribution, Acme's contexts and the defaults it applies."""
    dist = app.plugins.distribution()
    contexts = app.contexts.load()
    shared = [name for name in contexts.contexts if contexts.origin(name)]
    data = {
        "distribution": str(dist) if dist else None,
        "team_contexts": shared,
        "current": contexts.current,
        "registry": acme_envd.registry(),
        "tcp_defaults": app.plugins.option_defaults(
            "builder", "tcp", app.plugins.builder_type("tcp").options_declared()
        ),
    }
    if fmt == "json":
        click.echo(json.dumps(data))
        return
    for key, value in data.items():
        click.echo(f"{key}: {value}")
