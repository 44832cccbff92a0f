"""``envd plugins``: what is installed, what each plugin provides, and switching plugins off."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from envd_core.cli.render import dump_json, format_option, info, table
from envd_core.errors import ContextError, ValidationError

if TYPE_CHECKING:
    from envd_core.cli import App


@click.group()
def plugins() -> None:
    """Inspect envd plugins and switch them on or off."""


@plugins.command("ls")
@format_option
@click.pass_obj
def ls(app: App, fmt: str) -> None:
    """List every plugin: its package, version, origin, state and the types it provides.

    A distribution (a company's packaged envd) is named on the first line of the table and in
    the JSON row of the plugin that declares it.
    """
    infos = app.plugins.infos()
    dist = app.plugins.distribution()
    if fmt == "json":
        rows = []
        for i in infos:
            row = i.to_json()
            declared = dist is not None and dist.plugin == i.name
            row["declares_distribution"] = dist.to_json() if declared else None
            rows.append(row)
        click.echo(dump_json(rows))
        return
    if dist is not None:
        click.echo(f"Distribution: {dist} (plugin {dist.plugin})")
    rows_out = [
        [
            i.name,
            i.distribution or "-",
            i.version or "-",
            i.origin,
            i.state,
            ", ".join(i.builders) or "-",
            ", ".join(i.runners) or "-",
            ", ".join(i.stores) or "-",
            f"error: {i.error}" if i.error else "ok",
        ]
        for i in infos
    ]
    click.echo(table(
        ["plugin", "distribution", "version", "origin", "state", "builders", "runners", "stores",
         "status"],
        rows_out,
    ))


def _check_name(app: App, name: str) -> None:
    if name == "core":
        raise ValidationError("plugin `core` is envd itself and cannot be disabled")
    if app.plugins.known(name) is None:
        known = ", ".join(i.name for i in app.plugins.infos() if i.name != "core") or "none"
        raise ContextError(
            f"no installed plugin is named `{name}` (installed: {known})",
            hint="see `envd plugins ls`",
        )


@plugins.command("disable")
@click.argument("name")
@click.pass_obj
def disable(app: App, name: str) -> None:
    """Never load plugin NAME (stored in plugins.json in the envd config directory).

    Disabling a distribution's plugin returns envd to stock behaviour: its commands, team
    contexts, option defaults and name are gone; contexts it seeded into your store stay yours.
    """
    from envd_core.plugin_config import set_disabled

    _check_name(app, name)
    if set_disabled(name, True):
        info(f"Plugin {name} is disabled")
    else:
        info(f"Plugin {name} was already disabled")


@plugins.command("enable")
@click.argument("name")
@click.pass_obj
def enable(app: App, name: str) -> None:
    """Load plugin NAME again after `envd plugins disable`."""
    import os

    from envd_core.plugin_config import disabled_plugins, set_disabled

    if name not in disabled_plugins():
        _check_name(app, name)
    if set_disabled(name, False):
        info(f"Plugin {name} is enabled")
    else:
        info(f"Plugin {name} was not disabled")
    found = app.plugins.known(name)
    if found is not None and found.state not in ("enabled", "disabled"):
        # the environment still wins over the stored setting: say so rather than let it puzzle
        blocked = os.environ.get("ENVD_DISABLE_PLUGINS", "") or os.environ.get("ENVD_PLUGINS", "")
        info(f"warning: plugin {name} is still {found.state} ({blocked!r})")
