"""``envd exec``, ``pause``, ``resume`` and ``top``: work on a running environment."""

from __future__ import annotations

import sys
from typing import Any

import click

from envd_core.cli._envs_common import env_name, runner_of
from envd_core.cli.render import dump_json, format_option, info, table


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--name", "-n", default=None, help="Name of the environment.")
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Project directory the name is derived from.")
@click.option("--command", "-c", "command", default=None,
              help="A command defined with runtime.command() in build.envd.")
@click.option("--raw", "-r", default=None, help="A shell command line to run.")
@click.option("--interactive", "-i", is_flag=True,
              help="Send stdin to the command (a terminal when stdin is one).")
@click.option("--from", "-f", "from_spec", default=None, hidden=True,
              help="Accepted for upstream compatibility (commands come from the image).")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def exec_(app: Any, name: str | None, path: str, command: str | None, raw: str | None,
          interactive: bool, from_spec: str | None, argv: tuple[str, ...]) -> None:
    """Run a command in an environment: --raw 'LINE', --command NAME, or -- ARGV…"""
    from envd_core.cli.up import exec_shell
    from envd_core.environments.operations import runtime_commands
    from envd_core.errors import ValidationError

    given = [x for x in (command, raw, argv or None) if x]
    if len(given) != 1:
        raise ValidationError(
            "give exactly one of --command NAME, --raw 'COMMAND LINE' or -- ARGV",
            hint="e.g. envd exec --name myenv -- python3 -V",
        )
    runner = runner_of(app)
    target = env_name(name, path)
    if command:
        environment = runner.inspect(target)
        commands = runtime_commands(environment)
        if command not in commands:
            known = ", ".join(sorted(commands)) or "none"
            raise ValidationError(f"environment `{target}` has no command `{command}` "
                                  f"(defined: {known})",
                                  hint="define it with runtime.command(commands={...})")
        line = commands[command]
        run_argv = ["/bin/sh", "-c", line]
    elif raw:
        run_argv = ["/bin/sh", "-c", raw]
    else:
        run_argv = list(argv)
    code = exec_shell(runner, target, run_argv, workdir=None, interactive=interactive)
    if code:
        sys.exit(code)  # run() drops click.Exit codes (main returns them)


def _env_option(func: Any) -> Any:
    func = click.option("--env", "-e", "name", default=None,
                        help="Environment name (default: from the current directory).")(func)
    return click.argument("positional", required=False, metavar="[NAME]")(func)


@click.command("pause")
@_env_option
@click.pass_obj
def pause(app: Any, positional: str | None, name: str | None) -> None:
    """Freeze every process of an environment."""
    target = positional or env_name(name, ".")
    runner_of(app).pause(target)
    info(f"Environment {target} is paused")


@click.command("resume")
@_env_option
@click.pass_obj
def resume(app: Any, positional: str | None, name: str | None) -> None:
    """Thaw a paused environment."""
    target = positional or env_name(name, ".")
    runner_of(app).resume(target)
    info(f"Environment {target} is resumed")


@click.command("top")
@click.argument("names", nargs=-1, metavar="[NAME]…")
@format_option
@click.pass_obj
def top(app: Any, names: tuple[str, ...], fmt: str) -> None:
    """Show the processes of running environments (all of them by default)."""
    runner = runner_of(app)
    if not names:
        names = tuple(e.name for e in runner.list_environments() if e.running)
    results = []
    for name in names:
        titles, rows = runner.top(name)
        results.append({"name": name, "titles": titles, "processes": rows})
    if fmt == "json":
        click.echo(dump_json(results))
        return
    for index, result in enumerate(results):
        if index:
            click.echo("")
        click.echo(f"{result['name']}:")
        click.echo(table(["env", *result["titles"]],
                         [[result["name"], *row] for row in result["processes"]]))
