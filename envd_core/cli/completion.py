"""``envd completion SHELL``: print the shell completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(envd completion bash)"
    zsh:   eval "$(envd completion zsh)"
    fish:  envd completion fish | source
    """
    cls = get_completion_class(shell)
    assert cls is not None  # guaranteed by the Choice above
    root = ctx.find_root().command
    click.echo(cls(root, {}, "envd", "_ENVD_COMPLETE").source())
