"""``envd login`` / ``envd logout``: authenticate the context's runner (upstream's flags).

Only runners with :attr:`~envd_core.runner.Runner.can_login` (``envd-server``) take a login; for
the others ``login`` says it is not needed, as upstream does for the docker runner. The runner
keeps the credential per context (mode 0600); envd never prints it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from envd_core.cli.render import info
from envd_core.errors import EnvdError


@click.command("login")
@click.option("-u", "--username", metavar="NAME",
              help="Login name (default: <user>-<hostname>, registered if new).")
@click.option("-p", "--password", metavar="PASSWORD",
              help="Password; without one the name is registered with an empty password.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin (keeps it out of the shell history).")
@click.pass_obj
def login(app: Any, username: str | None, password: str | None, password_stdin: bool) -> None:
    """Log in to the runner of the context in force (envd-server) and register the SSH key."""
    if password is not None and password_stdin:
        raise click.UsageError("give either --password or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    ctx = app.resolve().context
    runner = app.contexts.runner_for(ctx)
    if not runner.can_login:
        info(f"login is not needed for {runner.name} runner, skipping")
        return
    if password is None:
        info("no password given: the name is registered with an empty password if it is new "
             "(use -p or --password-stdin to set one)")
    status = runner.login(ctx.name, username=username, password=password,
                          public_key=_public_key())
    click.echo(status)


@click.command("logout")
@click.pass_obj
def logout(app: Any) -> None:
    """Forget the login kept for the context in force."""
    ctx = app.resolve().context
    runner = app.contexts.runner_for(ctx)
    if not runner.can_login:
        info(f"logout is not needed for {runner.name} runner, skipping")
        return
    if runner.logout(ctx.name):
        click.echo(f"Removed the login of context {ctx.name}")
    else:
        info(f"context {ctx.name} holds no login")


def _public_key() -> str:
    """The public half of envd's SSH key pair (``id_rsa_envd.pub``), generated on first use."""
    from envd_core.contexts.store import config_dir
    from envd_core.environments.keys import ensure_key_pair

    key = ensure_key_pair(config_dir())
    try:
        return key.with_suffix(".pub").read_text().strip()
    except OSError as exc:
        raise EnvdError(f"cannot read `{key.with_suffix('.pub')}`: {exc.strerror}") from None
