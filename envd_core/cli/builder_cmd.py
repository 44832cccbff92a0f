"""``envd builder``: manage the daemon behind a context's builder.

``envd builder rm`` works like ``docker buildx rm``.
"""

from __future__ import annotations

from typing import Any

import click

from envd_core.cli.context import complete_context_names
from envd_core.cli.render import dump_json, info


@click.group("builder")
def builder() -> None:
    """Manage the buildkitd a context's builder started (bootstrap it with `envd bootstrap`)."""


@builder.command("rm")
@click.argument("name", required=False, shell_complete=complete_context_names)
@click.option("--keep-state", is_flag=True,
              help="Keep the daemon's state (its build cache) for the next bootstrap.")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]),
              help="text: progress and result on stderr; json: the result on stdout.")
@click.pass_obj
def rm(app: Any, name: str | None, keep_state: bool, fmt: str) -> None:
    """Stop and remove the buildkitd of context NAME (default: the context in force).

    The context itself stays; remove it with `envd context rm`. Builders envd does not start
    (tcp, unix, moby-worker) have nothing to remove.
    """
    from envd_core.builder import DaemonAction
    from envd_core.pipeline.bootstrap import remove_builder

    ctx = app.contexts.load().get(name) if name else app.resolve().context
    target = app.contexts.builder_for(ctx)
    change = remove_builder(target, keep_state=keep_state, report=info)
    if fmt == "json":
        click.echo(dump_json({"context": ctx.name, "builder": target.name, "url": target.url,
                              "keep_state": keep_state, **change.to_json()}))
        return
    if change.action is DaemonAction.ABSENT:
        detail = f": {change.detail}" if change.detail else ""
        info(f"No buildkitd to remove for {target.url}{detail}")
    else:
        info(f"Builder {target.url} is removed" + (f": {change.detail}" if change.detail else ""))
