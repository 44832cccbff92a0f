"""``envd bootstrap``: make the builder of the context in force ready, and say where it runs.

A builder type that manages its daemon (``can_bootstrap``) starts it; every other type (tcp,
unix, moby-worker) is connected to and checked, as upstream envd does. Upstream's other flags
(SSH keys, registry mirrors and CAs, shell completion) are not accepted until they are honoured.
"""

from __future__ import annotations

from typing import Any

import click

from envd_core.cli.render import dump_json, info


@click.command("bootstrap")
@click.option("--force", is_flag=True,
              help="Recreate a daemon envd started whose image or config is stale.")
@click.option("--timeout", default=None, metavar="DURATION",
              help="How long to wait for BuildKit to answer, as a Go duration "
                   "(default: $BUILDKIT_CONNECTING_TIMEOUT, else 5s).")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]),
              help="text: progress and result on stderr; json: the result on stdout.")
@click.pass_obj
def bootstrap(app: Any, force: bool, timeout: str | None, fmt: str) -> None:
    """Bootstrap the buildkitd of the context in force, or check that it is running."""
    from envd_core.buildkit.transport import connect_timeout, parse_go_duration
    from envd_core.errors import ValidationError
    from envd_core.pipeline.bootstrap import bootstrap_builder

    wait = None
    if timeout is not None:
        try:
            wait = parse_go_duration(timeout)
        except ValidationError:
            raise ValidationError(
                f"invalid --timeout `{timeout}`: use a Go duration such as `5s` or `1m`"
            ) from None
        if wait <= 0:
            raise ValidationError(f"invalid --timeout `{timeout}`: it must be positive")
    resolved = app.resolve()
    builder = app.contexts.builder_for(resolved.context)
    info(f"Context `{resolved.context.name}` (from {resolved.reason}): builder {builder.url}")
    outcome = bootstrap_builder(builder, timeout=connect_timeout(wait), force=force, report=info)
    if fmt == "json":
        click.echo(dump_json({"context": resolved.context.name, **outcome.to_json()}))
        return
    status = outcome.status
    if outcome.managed:
        info(f"{outcome.change.action}: {outcome.change.detail}".rstrip(": "))
    platforms = ", ".join(status.platforms) or "no platforms"
    info(f"{status.version or 'unknown version'}, {status.workers} worker(s): {platforms}")
    info(f"The buildkit is running at {builder.url}")
