"""``envd completion``: print the shell completion script, or install it as upstream's does.

Two forms: ``envd completion SHELL`` prints the script (click's own: ``eval "$(envd completion
bash)"``); upstream's ``envd completion [--shell SHELL ...] [--no-install]`` installs it for each
shell (default ``$SHELL``) where the shell's completion loader finds it, the same files
``envd bootstrap`` writes (never an rc file), or prints it with ``--no-install``.
"""

from __future__ import annotations

import os

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", required=False, type=click.Choice(SHELLS))
@click.option("--shell", "-s", "shells", multiple=True, type=click.Choice(SHELLS),
              help="Install completion for this shell (repeatable; default: $SHELL).")
@click.option("--no-install", is_flag=True,
              help="Print the script of each --shell instead of installing it.")
@click.pass_context
def completion(ctx: click.Context, shell: str | None, shells: tuple[str, ...],
               no_install: bool) -> None:
    """Print the completion script for SHELL, or install it (--shell, upstream's form).

    \b
    bash:  eval "$(envd completion bash)"
    zsh:   eval "$(envd completion zsh)"
    fish:  envd completion fish | source
    or:    envd completion --shell zsh   (written where zsh's loader looks)
    """
    from envd_core.cli.render import info
    from envd_core.errors import ValidationError
    from envd_core.pipeline.bootstrap_setup import completion_script, install_completion

    root = ctx.find_root().command
    if shell is not None:
        if shells:
            raise ValidationError("give the shell once: `envd completion zsh` prints its script, "
                                  "`envd completion --shell zsh` installs it")
        click.echo(completion_script(root, shell))
        return
    if not shells:
        login = os.path.basename(os.environ.get("SHELL", ""))
        if login not in SHELLS:
            raise ValidationError(
                f"cannot tell which shell to complete for (SHELL is `{login or 'unset'}`)",
                hint="name it: `envd completion --shell bash|zsh|fish`")
        shells = (login,)
    for name in dict.fromkeys(shells):
        if no_install:
            click.echo(completion_script(root, name))
            continue
        installed, path = install_completion(root, name)
        info(f"{installed} completion written to {path}")
