"""``envd prune`` and ``envd disk-usage``: the build cache of the context's builder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import click

from envd_core.cli.render import dump_json, format_option, info, table

if TYPE_CHECKING:
    from envd_core.buildkit.client import BuildkitClient, UsageRecord
    from envd_core.cli import App


@contextlib.contextmanager
def builder_client(app: App) -> Iterator[BuildkitClient]:
    """A BuildKit client for the builder of the context in force; closed on exit."""
    from envd_core.buildkit.client import BuildkitClient
    from envd_core.buildkit.transport import connect_timeout

    resolved = app.resolve()
    builder = app.contexts.builder_for(resolved.context)
    connection = builder.connect(timeout=connect_timeout())
    try:
        yield BuildkitClient(connection)
    finally:
        connection.close()


def human_size(size: int) -> str:
    """``size`` bytes in decimal units, as buildctl prints them (``1.50MB``)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _records_json(records: Sequence[UsageRecord]) -> list[dict[str, object]]:
    return [
        {"id": r.id, "size": r.size, "in_use": r.in_use, "mutable": r.mutable,
         "shared": r.shared, "type": r.record_type, "description": r.description,
         "usage_count": r.usage_count, "last_used_at": r.last_used_at}
        for r in records
    ]


def _render(records: Sequence[UsageRecord], fmt: str, verbose: bool, total_label: str) -> None:
    if fmt == "json":
        click.echo(dump_json(_records_json(records)))
        return
    total = sum(r.size for r in records)
    if verbose:
        rows = [[r.id[:25], "*" if r.in_use else "", human_size(r.size),
                 r.record_type or "-", r.description[:60]] for r in records]
        click.echo(table(["id", "in use", "size", "type", "description"], rows))
    click.echo(f"{total_label}: {human_size(total)} in {len(records)} records")


@click.command("prune")
@click.option("--all", "-a", "prune_all", is_flag=True, help="Also remove cache in use by images.")
@click.option("--keep-duration", default=None, metavar="DURATION",
              help="Keep cache newer than this Go duration (e.g. 24h).")
@click.option("--keep-storage", default=None, type=float, metavar="MB",
              help="Keep this much storage (MB).")
@click.option("--filter", "filters", multiple=True, help="BuildKit filter (repeatable).")
@click.option("--verbose", is_flag=True, help="List every removed record.")
@format_option
@click.pass_obj
def prune(app: App, prune_all: bool, keep_duration: str | None, keep_storage: float | None,
          filters: tuple[str, ...], verbose: bool, fmt: str) -> None:
    """Remove build cache from the builder of the context in force."""
    from envd_core.buildkit.transport import parse_go_duration

    duration = parse_go_duration(keep_duration) if keep_duration else None
    keep_bytes = int(keep_storage * 1e6) if keep_storage else None
    with builder_client(app) as client:
        records = client.prune(all=prune_all, keep_duration=duration, keep_bytes=keep_bytes,
                               filters=filters)
    _render(records, fmt, verbose, "Total reclaimed")
    if fmt != "json" and not records:
        info("Nothing to prune")


@click.command("disk-usage")
@click.option("--filter", "filters", multiple=True, help="BuildKit filter (repeatable).")
@click.option("--verbose", is_flag=True, help="List every record.")
@format_option
@click.pass_obj
def disk_usage(app: App, filters: tuple[str, ...], verbose: bool, fmt: str) -> None:
    """Show the build cache of the builder of the context in force."""
    with builder_client(app) as client:
        records = client.disk_usage(filters)
    _render(records, fmt, verbose, "Total")
