"""Presentation helpers: plain tables (upstream's borderless style), JSON, and the output of the
read-only context commands.

Nothing here imports click at module level: the fast path of ``envd context ls/show``
(:mod:`envd_core.cli.fast`) renders with these same functions without loading click, so the two
ways in print byte-identical output.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing and click are not imported at run time (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeVar

    import click

    from envd_core.contexts.model import ContextSet
    from envd_core.contexts.resolve import Resolved
    from envd_core.listing import ListedEnvironment

    _Command = TypeVar("_Command", bound=Callable[..., Any])

FORMATS = ("table", "json")


def format_option(func: _Command) -> _Command:
    """``--format/-f table|json``, with upstream's message for anything else."""
    import click

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value not in FORMATS:
            raise click.BadParameter(
                f'Argument format only allows "json" and "table", found "{value}"'
            )
        return value

    return click.option(
        "--format",
        "-f",
        "fmt",
        default="table",
        show_default=True,
        metavar="table|json",
        callback=check,
        help="Output format.",
    )(func)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by spaces, upper-case headers, no borders."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines)


def dump_json(data: object, *, pretty: bool = False) -> str:
    """``data`` as JSON text: compact by default, indented with ``pretty``."""
    import json  # only JSON output needs the encoder (the fast path's tables do not)

    if pretty:
        return json.dumps(data, indent=2, ensure_ascii=False)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def info(message: str) -> None:
    """A progress or confirmation line, on stderr as upstream's log lines are."""
    if "click" in sys.modules:  # click.echo copes with closed/odd streams; use it when loaded
        import click

        click.echo(message, err=True)
    else:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def context_list(
    contexts: ContextSet,
    installed: Callable[[str, str], tuple[bool, bool]],
    fmt: str,
    statuses: Mapping[str, Any] | None = None,
    status_cell: Callable[[Any], str] | None = None,
) -> str:
    """What ``envd context ls`` prints.

    ``installed(builder_type, runner_type)`` says whether a plugin provides each type (the
    full CLI asks the loaded plugins, the fast path the plugin index); ``statuses`` are the
    ``--status`` probes by context name, ``status_cell`` renders one for the table.
    """
    from envd_core.contexts.model import context_row

    items = list(contexts.contexts.values())
    if fmt == "json":
        rows: list[dict[str, Any]] = []
        for ctx in items:
            row = context_row(ctx, contexts.current, contexts.origin(ctx.name))
            builder_ok, runner_ok = installed(ctx.builder, ctx.runner)
            row["installed"] = builder_ok and runner_ok
            if statuses is not None:
                row["status"] = statuses[ctx.name]
            rows.append(row)
        return dump_json(rows)
    headers = ["context", "builder", "builder addr", "runner", "runner addr"]
    # the origin column appears only beside team contexts: a stock listing stays upstream's
    with_origin = bool(contexts.origins)
    if with_origin:
        headers.append("origin")
    if statuses is not None:
        headers.append("status")
    table_rows = []
    for ctx in items:
        builder_ok, runner_ok = installed(ctx.builder, ctx.runner)
        name = ctx.name + (" (current)" if ctx.name == contexts.current else "")
        cells = [
            name,
            ctx.builder + ("" if builder_ok else " (not installed)"),
            ctx.builder_url,
            ctx.runner + ("" if runner_ok else " (not installed)"),
            ctx.runner_address or "",
        ]
        if with_origin:
            cells.append(contexts.origin(ctx.name) or "user")
        if statuses is not None:
            cells.append(status_cell(statuses[ctx.name]) if status_cell else "")
        table_rows.append(cells)
    return table(headers, table_rows)


def context_show(resolved: Resolved, origin: str | None, fmt: str) -> str:
    """What ``envd context show`` prints: the context in force and why."""
    if fmt == "json":
        return dump_json({"context": resolved.context.name, "source": resolved.source,
                          "detail": resolved.detail, "origin": origin or "user"})
    defined = f"; read-only team context, {origin}" if origin else ""
    return f"{resolved.context.name}\t(from {resolved.reason}{defined})"


def context_used(name: str, environ: Mapping[str, str]) -> list[str]:
    """The stderr lines of ``envd context use NAME`` once the store was changed."""
    lines = [f'Current context is "{name}"']
    if environ.get("ENVD_CONTEXT") and environ["ENVD_CONTEXT"] != name:
        lines.append(f"warning: ENVD_CONTEXT={environ['ENVD_CONTEXT']} overrides the current "
                     "context")
    return lines


def _endpoint(environment: ListedEnvironment) -> str:
    """Services other than SSH as ``service: http://host:port`` (upstream's endpoint column)."""
    parts = []
    for port in environment.ports:
        if port.service and port.service != "ssh":
            host = "127.0.0.1" if port.host_ip in ("0.0.0.0", "") else port.host_ip
            parts.append(f"{port.service}: http://{host}:{port.host_port}")
    return ", ".join(parts)


def _jupyter_address(environment: ListedEnvironment) -> str | None:
    """``http://host:port`` of the environment's Jupyter: the runner's label, else its port."""
    from envd_core.listing import LABEL_JUPYTER_ADDRESS

    label = environment.labels.get(LABEL_JUPYTER_ADDRESS)
    if label:
        return label
    for port in environment.ports:
        if port.service == "jupyter":
            host = "127.0.0.1" if port.host_ip in ("0.0.0.0", "") else port.host_ip
            return f"http://{host}:{port.host_port}"
    return None


def environment_row(environment: ListedEnvironment, *, with_id: bool = True) -> dict[str, Any]:
    """One ``envs ls --format json`` row: upstream's keys, plus where SSH listens and the
    runner's id (keys without a value are left out). The table shows no id: it asks for rows
    ``with_id=False``, so a runner whose ids are computed (see ``ListedEnvironment``) skips
    that work."""
    from envd_core.listing import LABEL_CUDA, LABEL_CUDNN, LABEL_GPU

    labels = environment.labels
    row: dict[str, Any] = {
        "name": environment.name,
        "endpoint": _endpoint(environment) or None,
        "ssh_target": f"{environment.name}.envd",  # envd_core.environments.names.ssh_host
        "image": environment.image,
        "gpu": labels.get(LABEL_GPU) == "true",
        "cuda": labels.get(LABEL_CUDA) or None,
        "cudnn": labels.get(LABEL_CUDNN) or None,
        "status": environment.status,
        "ssh_port": environment.ssh[1] if environment.ssh else None,
        "jupyter_address": _jupyter_address(environment),
        "id": environment.id[:12] if with_id else None,
    }
    return {k: v for k, v in row.items() if v is not None}


def environment_list(environments: Sequence[ListedEnvironment], fmt: str) -> str:
    """What ``envd envs ls`` prints: upstream's columns, or the rows as JSON."""
    if fmt == "json":
        return dump_json([environment_row(e) for e in environments])
    rows = [environment_row(e, with_id=False) for e in environments]
    return table(
        ["name", "endpoint", "ssh target", "image", "gpu", "cuda", "cudnn", "status"],
        [[r["name"], r.get("endpoint", ""), r["ssh_target"], r["image"],
          str(r["gpu"]).lower(), r.get("cuda", "<none>"), r.get("cudnn", "<none>"),
          r["status"]] for r in rows],
    )
