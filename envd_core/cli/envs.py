"""``envd envs ls|describe`` and ``envd down`` (also ``destroy``, upstream's name)."""

from __future__ import annotations

from typing import Any

import click

from envd_core.cli import aliases
from envd_core.cli._envs_common import env_name, listed_environments, runner_of, ssh_config
from envd_core.cli.app import AliasGroup
from envd_core.cli.render import dump_json, format_option, info, table


@click.group("envs", cls=AliasGroup, aliases=aliases.ENVS)
def envs() -> None:
    """Manage envd environments."""


@envs.command("ls")
@format_option
@click.pass_obj
def ls(app: Any, fmt: str) -> None:
    """List the environments of the context's runner."""
    # the fast path (envd_core.cli.fast) serves this too, with the same lister and renderer
    from envd_core.cli.render import environment_list

    click.echo(environment_list(listed_environments(app), fmt))


@envs.command("describe")
@click.argument("positional", required=False, metavar="[NAME]")
@click.option("--env", "-e", "name", default=None,
              help="The environment (default: this project's).")
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Project directory the name is derived from.")
@format_option
@click.pass_obj
def describe(app: Any, positional: str | None, name: str | None, path: str, fmt: str) -> None:
    """Show an environment's ports and dependencies."""
    from envd_core.environments.operations import describe_rows

    environment = runner_of(app).inspect(positional or env_name(name, path))
    data = describe_rows(environment)
    if fmt == "json":
        click.echo(dump_json({k: v for k, v in data.items() if v}))
        return
    if data["dependencies"]:
        click.echo(table(["dependencies", "type"],
                         [[d["name"], d["type"]] for d in data["dependencies"]]))
    if data["ports"]:
        click.echo(table(["name", "container port", "protocol", "host ip", "host port"],
                         [[p["name"], p["container_port"], p["protocol"], p["host_ip"],
                           p["host_port"]] for p in data["ports"]]))


@click.command("down")
@click.argument("positional", required=False, metavar="[NAME]")
@click.option("--name", "-n", default=None, help="Name of the environment.")
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Project directory the name is derived from.")
@click.pass_obj
def down(app: Any, positional: str | None, name: str | None, path: str) -> None:
    """Stop and remove an environment, and its ~/.ssh/config entry."""
    from envd_core.environments.operations import remove_environment
    from envd_core.runner import EnvironmentNotFoundError

    target = positional or env_name(name, path)
    runner = runner_of(app)
    if not remove_environment(runner, target, ssh_config()):
        raise EnvironmentNotFoundError(
            f"environment `{target}` not found on runner `{runner.name}`",
            hint="list environments with `envd envs ls`",
        )
    info(f"Environment {target} is removed")
