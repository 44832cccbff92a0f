"""``envd login`` / ``envd logout``: authenticate the context's runner (upstream's flags).

Only runners with :attr:`~envd_core.runner.Runner.can_login` (``envd-server``) take a login; for
the others ``login`` says it is not needed, as upstream does for the docker runner. The runner
keeps the credential per context (mode 0600); envd never prints it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from envd_core.cli.render import info
from envd_core.errors import EnvdError

_KEY_NAME = "id_rsa_envd"


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
    """The public half of envd's SSH key pair (``id_rsa_envd.pub``), generated on first use.

    The environments commands own the key pair (``envd_core.environments.keys``); until that
    module is present this finds upstream's or our pair, or generates one with ``ssh-keygen``.
    """
    import contextlib
    import importlib

    from envd_core.contexts.store import config_dir

    ensure_key_pair: Callable[[Path], Path] = _ensure_key_pair
    # by name: the module lands with the environments branch, and mypy must pass either way;
    # until then this file's own fallback below makes the pair
    with contextlib.suppress(ImportError):
        ensure_key_pair = importlib.import_module("envd_core.environments.keys").ensure_key_pair
    key = Path(ensure_key_pair(config_dir()))
    try:
        return key.with_suffix(".pub").read_text().strip()
    except OSError as exc:
        raise EnvdError(f"cannot read `{key.with_suffix('.pub')}`: {exc.strerror}") from None


def _ensure_key_pair(directory: Path) -> Path:
    import os
    import shutil
    import subprocess

    for candidate in (directory, Path.home() / ".config" / "envd"):
        key = candidate / _KEY_NAME
        if key.is_file() and key.with_suffix(".pub").is_file():
            return key
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise EnvdError("cannot generate envd's SSH key: `ssh-keygen` is not installed",
                        hint="install the OpenSSH client (apt-get install openssh-client)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{_KEY_NAME}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [keygen, "-q", "-t", "rsa", "-b", "4096", "-m", "PEM", "-N", "", "-C", "envd",
         "-f", str(tmp)],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise EnvdError(f"ssh-keygen failed: {proc.stderr.strip() or proc.returncode}")
    key = directory / _KEY_NAME
    os.replace(tmp.with_name(tmp.name + ".pub"), key.with_suffix(".pub"))
    os.replace(tmp, key)
    return key
