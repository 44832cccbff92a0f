"""``envd version``: this envd, Python, the installed plugins (and with --detail, the runner)."""

from __future__ import annotations

import platform
import sys
from typing import Any

import click

from envd_core.cli.render import dump_json, format_option, table


@click.command("version")
@click.option("--short", "-s", is_flag=True, help="Only print the version number.")
@click.option("--detail", "-d", is_flag=True,
              help="Also ask the context's runner for its version.")
@format_option
@click.pass_obj
def version(app: Any, short: bool, detail: bool, fmt: str) -> None:
    """Print the version of envd and of its plugins."""
    from envd_core import __version__

    data: dict[str, Any] = {"envd": __version__}
    found = app.plugins.distribution()  # a vendor's envd names itself (envd_distribution)
    data["distribution"] = None if found is None else found.to_json()
    if not short:
        data["python_version"] = platform.python_version()
        data["platform"] = f"{sys.platform}/{platform.machine()}"
        data["plugins"] = [
            {"name": i.name, "distribution": i.distribution, "version": i.version}
            for i in app.plugins.infos() if i.distribution
        ]
    if detail:
        resolved = app.resolve()
        runner = app.contexts.runner_for(resolved.context)
        status = runner.status()
        data["context"] = resolved.context.name
        data["runner"] = runner.name
        data["runner_version"] = status.version if status.reachable else None
        if not status.reachable:
            data["runner_error"] = status.error
    if fmt == "json":
        click.echo(dump_json(data))
        return
    if short:
        click.echo(f"envd: {__version__}")
        return
    if found is not None:
        click.echo(f"distribution: {found}")
    for key in ("envd", "python_version", "platform", "context", "runner", "runner_version",
                "runner_error"):
        if data.get(key) is not None:
            click.echo(f"{key}: {data[key]}")
    if data["plugins"]:
        click.echo(table(["plugin", "distribution", "version"],
                         [[p["name"], p["distribution"] or "-", p["version"] or "-"]
                          for p in data["plugins"]]))
