"""``envd context``: create, ls, use, rm (upstream-compatible) and show, inspect, update,
export, import (beyond upstream)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from click.shell_completion import CompletionItem

from envd_core.cli.render import (
    context_list,
    context_show,
    context_used,
    dump_json,
    format_option,
    info,
    table,
)
from envd_core.errors import UsageError


def complete_context_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of stored context names.

    Reads the store selected by ``ENVD_CONTEXT_STORE`` without writing it: pressing Tab on a
    fresh machine must not create ``contexts.json`` (a missing store completes ``default``).
    Plugins are loaded only when a store other than the embedded file store is selected.
    """
    try:
        from envd_core.contexts.store import ContextStore, FileStore

        store: ContextStore
        wanted = os.environ.get("ENVD_CONTEXT_STORE") or FileStore.name
        if wanted == FileStore.name:
            store = FileStore()
        else:
            from envd_core.contexts.operations import open_store
            from envd_core.plugins import Plugins

            store = open_store(Plugins.create(), wanted)
        names = list(store.peek().contexts)
        # team contexts of the system directory too (a plugin's would need every plugin loaded)
        from envd_core.contexts.team import read_dir, team_dir

        names += [t.context.name for t in read_dir(team_dir())[0] if t.context.name not in names]
    except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def _name(flag: str | None, positional: str | None, command: str) -> str:
    if flag and positional and flag != positional:
        raise UsageError(f"give the context name once (--name `{flag}` or `{positional}`)")
    name = flag or positional
    if not name:
        raise UsageError(
            f'Required flag "name" not set (usage: envd context {command} --name NAME)'
        )
    return name


name_option = click.option(
    "--name", "name_flag", metavar="NAME", shell_complete=complete_context_names,
    help="Name of the context.",
)
name_argument = click.argument(
    "name_arg", metavar="[NAME]", required=False, shell_complete=complete_context_names
)


class ContextGroup(click.Group):
    """``envd context``: remembers the subcommand's arguments for the first-run hint.

    ``resolve_command`` is the one public point that sees them before the group callback runs.
    """

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        ctx.meta["envd.context.args"] = list(args)
        return super().resolve_command(ctx, args)


def _wants_json(args: list[str]) -> bool:
    for i, arg in enumerate(args):
        if arg in ("--format=json", "-fjson"):
            return True
        if arg in ("--format", "-f") and args[i + 1 : i + 2] == ["json"]:
            return True
    return False


def _first_run_hint(args: list[str]) -> None:
    """One stderr line, once, when upstream envd's contexts exist and ours hold only default.

    Never under ``--format json`` (scripts parse that), never for the import itself, never an
    error: a hint must not stand in the way of the command.
    """
    if not args or args[0] == "import" or _wants_json(args) or os.environ.get("_ENVD_COMPLETE"):
        return
    from pathlib import Path

    from envd_core.paths import is_file

    # upstream's store is always $HOME/.config/envd/contexts (contexts.upstream.upstream_file);
    # checked here first so that every `envd context` command without it skips the import of
    # the gob reader (~8 ms measured on this machine). is_file: a HOME we may not read (another
    # user's, under sudo -u) only means there is no hint to give.
    if not is_file(Path.home() / ".config" / "envd" / "contexts"):
        return
    from envd_core.contexts.store import FileStore
    from envd_core.contexts.upstream import first_run_hint
    from envd_core.errors import EnvdError

    if (os.environ.get("ENVD_CONTEXT_STORE") or FileStore.name) != FileStore.name:
        return
    store = FileStore()
    try:
        line = first_run_hint(store.peek, store.directory)
    except (EnvdError, OSError):  # a broken store is the command's to report, not the hint's
        return
    if line:
        info(line)


@click.group(cls=ContextGroup)
@click.pass_context
def context(ctx: click.Context) -> None:
    """Manage envd contexts (which builder builds, which runner runs)."""
    _first_run_hint(ctx.meta.get("envd.context.args", []))


@context.command("create")
@name_option
@click.option("--builder", default="docker-container", show_default=True,
              help="Builder type (see `envd plugins ls`).")
@click.option("--builder-address", default=None, metavar="ADDR",
              help="Builder address, with or without the <type>:// scheme.")
@click.option("--runner", default="docker", show_default=True, help="Runner type.")
@click.option("--runner-address", default=None, metavar="ADDR", help="Runner address.")
@click.option("--builder-opt", "builder_opts", multiple=True, metavar="KEY=VALUE",
              help="Builder option (repeatable), e.g. tlscacert=/path/ca.pem.")
@click.option("--runner-opt", "runner_opts", multiple=True, metavar="KEY=VALUE",
              help="Runner option (repeatable).")
@click.option("--description", default="", help="Free text shown by inspect.")
@click.option("--use", is_flag=True, help="Make it the current context.")
@name_argument
@click.pass_obj
def create(app: Any, name_flag: str | None, name_arg: str | None, builder: str,
           builder_address: str | None, runner: str, runner_address: str | None,
           builder_opts: tuple[str, ...], runner_opts: tuple[str, ...], description: str,
           use: bool) -> None:
    """Create envd context."""
    from envd_core.options import parse_pairs

    name = _name(name_flag, name_arg, "create")
    ctx = app.contexts.create(
        name=name,
        builder=builder,
        builder_address=builder_address,
        runner=runner,
        runner_address=runner_address,
        builder_options=parse_pairs(builder_opts, flag="--builder-opt"),
        runner_options=parse_pairs(runner_opts, flag="--runner-opt"),
        description=description,
        use=use,
    )
    info(f"Context {ctx.name} is created")
    _warn_about(app, ctx)
    if use:
        info(f'Current context is "{ctx.name}"')


def _warn_about(app: Any, ctx: Any) -> None:
    """The builder's warnings about this configuration (``Builder.warnings``): said when the
    context is created or changed, not by every listing that probes it."""
    from envd_core.errors import EnvdError

    try:
        lines = app.contexts.builder_for(ctx).warnings()
    except EnvdError:
        return  # a builder type that is not installed: nothing to say about its configuration
    for line in lines:
        info(f"envd: warning: {line}")


def _probe_all(app: Any, contexts: list[Any], timeout: float) -> dict[str, dict[str, Any]]:
    """Probe every context's builder concurrently; never raises."""
    # imported here: only --status and inspect probe, and `envd context ls` must start fast
    from concurrent.futures import ThreadPoolExecutor

    from envd_core.builder import BuilderStatus
    from envd_core.errors import EnvdError

    def one(ctx: Any) -> dict[str, Any]:
        try:
            builder = app.contexts.builder_for(ctx)
        except EnvdError as exc:
            # keep the hint: it names the package that provides the missing type
            error = f"{exc.message}; {exc.hint}" if exc.hint else exc.message
            return BuilderStatus(False, error=error, error_kind="plugin-missing").to_json()
        try:
            return builder.status(timeout=timeout).to_json()  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not break the listing
            return BuilderStatus(False, error=f"{type(exc).__name__}: {exc}",
                                 error_kind="error").to_json()

    if not contexts:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(contexts))) as pool:
        return dict(zip((c.name for c in contexts), pool.map(one, contexts), strict=True))


def _status_cell(status: dict[str, Any]) -> str:
    if status["reachable"]:
        version = status.get("version") or "unknown version"
        return f"running ({version}, {status.get('latency_ms')} ms)"
    return f"{status.get('error_kind') or 'error'}: {status.get('error') or ''}".strip()


@context.command("ls")
@format_option
@click.option("--status", "with_status", is_flag=True,
              help="Probe every builder (concurrently) and add a STATUS column.")
@click.option("--timeout", default=3.0, show_default=True, type=float,
              help="Seconds to wait for each builder with --status.")
@click.pass_obj
def ls(app: Any, fmt: str, with_status: bool, timeout: float) -> None:
    """List envd contexts."""
    contexts = app.contexts.load()
    statuses = (
        _probe_all(app, list(contexts.contexts.values()), timeout) if with_status else None
    )
    installed = app.contexts.types_installed
    click.echo(context_list(contexts, installed, fmt, statuses, _status_cell))


@context.command("use")
@name_option
@name_argument
@click.pass_obj
def use(app: Any, name_flag: str | None, name_arg: str | None) -> None:
    """Use the specified envd context."""
    name = _name(name_flag, name_arg, "use")
    app.contexts.use(name)
    for line in context_used(name, os.environ):
        info(line)


@context.command("rm")
@name_option
@name_argument
@click.pass_obj
def rm(app: Any, name_flag: str | None, name_arg: str | None) -> None:
    """Remove envd context (never the current one)."""
    name = _name(name_flag, name_arg, "rm")
    app.contexts.remove(name)
    info(f"Context {name} is removed")


@context.command("show")
@format_option
@click.pass_obj
def show(app: Any, fmt: str) -> None:
    """Print the context in force and why it is in force."""
    resolved = app.resolve()
    origin = app.contexts.load().origin(resolved.context.name)
    click.echo(context_show(resolved, origin, fmt))


@context.command("inspect")
@click.argument("name", required=False, shell_complete=complete_context_names)
@click.option("--no-status", is_flag=True, help="Do not probe the builder.")
@click.option("--timeout", default=3.0, show_default=True, type=float,
              help="Seconds to wait for the builder.")
@click.pass_obj
def inspect_(app: Any, name: str | None, no_status: bool, timeout: float) -> None:
    """Show one context as JSON (default: the context in force), with its builder's status."""
    from envd_core.contexts.operations import context_details

    contexts = app.contexts.load()
    ctx = contexts.get(name) if name else app.resolve().context
    data = context_details(ctx)
    data["current"] = ctx.name == contexts.current
    data["origin"] = contexts.origin(ctx.name) or "user"
    builder_ok, runner_ok = app.contexts.is_installed(ctx)
    data["installed"] = {"builder": builder_ok, "runner": runner_ok}
    # the context's options over the plugins' defaults (envd_option_defaults): what is used
    data["options_in_force"] = {
        kind: app.contexts.options_in_force(ctx, kind)
        for kind, ok in (("builder", builder_ok), ("runner", runner_ok)) if ok
    }
    if not no_status:
        data["status"] = _probe_all(app, [ctx], timeout)[ctx.name]
    click.echo(dump_json(data, pretty=True))


@context.command("update")
@click.argument("name", shell_complete=complete_context_names)
@click.option("--builder-address", default=None, metavar="ADDR")
@click.option("--runner", default=None)
@click.option("--runner-address", default=None, metavar="ADDR")
@click.option("--builder-opt", "builder_opts", multiple=True, metavar="KEY=VALUE")
@click.option("--runner-opt", "runner_opts", multiple=True, metavar="KEY=VALUE")
@click.option("--unset-opt", "unset_opts", multiple=True, metavar="KEY",
              help="Remove a builder or runner option (repeatable).")
@click.option("--description", default=None)
@click.pass_obj
def update(app: Any, name: str, builder_address: str | None, runner: str | None,
           runner_address: str | None, builder_opts: tuple[str, ...],
           runner_opts: tuple[str, ...], unset_opts: tuple[str, ...],
           description: str | None) -> None:
    """Change an existing context; what is not given stays as it is."""
    from envd_core.options import parse_pairs

    ctx = app.contexts.update(
        name,
        builder_address=builder_address,
        runner=runner,
        runner_address=runner_address,
        builder_options=parse_pairs(builder_opts, flag="--builder-opt"),
        runner_options=parse_pairs(runner_opts, flag="--runner-opt"),
        unset_options=unset_opts,
        description=description,
    )
    info(f"Context {name} is updated")
    if builder_address is not None or builder_opts or unset_opts:
        _warn_about(app, ctx)


@context.command("export")
@click.argument("name", shell_complete=complete_context_names)
@click.argument("dest", default="-", metavar="FILE|-")
@click.pass_obj
def export(app: Any, name: str, dest: str) -> None:
    """Write a context to FILE (or stdout) as JSON; key and certificate files travel as paths."""
    document = dump_json(app.contexts.export(name), pretty=True) + "\n"
    if dest == "-":
        sys.stdout.write(document)
        return
    from envd_core.errors import ValidationError

    try:
        with open(dest, "x", encoding="utf-8") as handle:
            handle.write(document)
    except FileExistsError:
        raise ValidationError(f"`{dest}` already exists; choose another file") from None
    except OSError as exc:
        raise ValidationError(f"cannot write `{dest}`: {exc.strerror}") from None
    info(f"Context {name} is exported to {dest}")


@context.command("import")
@click.argument("name", required=False)
@click.argument("source", metavar="[FILE|-]", required=False)
@click.option("--from-upstream", is_flag=True,
              help="Import every context of upstream envd (~/.config/envd/contexts).")
@click.option("--dry-run", is_flag=True, help="With --from-upstream: report, change nothing.")
@click.option("--use", is_flag=True,
              help="Make it the current context (with --from-upstream: upstream's current one).")
@format_option
@click.pass_obj
def import_(app: Any, name: str | None, source: str | None, from_upstream: bool, dry_run: bool,
            use: bool, fmt: str) -> None:
    """Create context NAME from an export written by `envd context export`, or, with
    --from-upstream, import every context upstream envd (Go) has stored.

    \b
    envd context import remote ./remote.json
    envd context import --from-upstream --dry-run
    envd context import --from-upstream --use
    """
    if from_upstream:
        if name or source:
            raise UsageError("--from-upstream takes no NAME or FILE (it reads upstream's store)")
        plan = app.contexts.import_upstream(use=use, dry_run=dry_run)
        _render_upstream_import(plan, fmt=fmt, dry_run=dry_run)
        return
    if dry_run:
        raise UsageError("--dry-run applies to --from-upstream only")
    if not name or not source:
        raise UsageError("give NAME and FILE (usage: envd context import NAME FILE|-), "
                         "or --from-upstream")
    from envd_core.contexts.operations import read_document

    ctx = app.contexts.import_(name, read_document(source), use=use)
    info(f"Context {ctx.name} is created")
    if use:
        info(f'Current context is "{ctx.name}"')


def _render_upstream_import(plan: Any, *, fmt: str, dry_run: bool) -> None:
    """The report of an upstream import: a row per context, then a summary on stderr."""
    if fmt == "json":
        click.echo(dump_json({**plan.to_json(), "dry_run": dry_run}))
        return
    rows = []
    for item in plan.items:
        data = item.to_json()
        note = "; ".join(filter(None, [data.get("reason", ""), *data["notes"]]))
        action = f"would be {item.action}" if dry_run and item.action == "imported" else item.action
        rows.append([data["context"], action, data["builder_addr"], data["runner"],
                     data.get("runner_addr", ""), note])
    click.echo(table(["context", "action", "builder addr", "runner", "runner addr", "note"], rows))
    counts = plan.counts()
    verb = "Would import" if dry_run else "Imported"
    info(f"{verb} {counts['imported']} context(s) from {plan.source} "
         f"({counts['unchanged']} unchanged, {counts['skipped']} skipped)"
         + ("; dry run: nothing was written" if dry_run else ""))
    current = plan.upstream_current
    if plan.current_action == "switched":
        info(f'Current context {"would be" if dry_run else "is"} "{current}"')
    elif plan.current_action == "not-switched":
        info(f"Current context not changed: {plan.current_reason}")
    elif plan.current_action == "not-requested":
        info(f'Upstream\'s current context is "{current}"; add --use to make it current here')
    for login in plan.logins:
        action = f"would be {login.action}" if dry_run and login.action == "imported" \
            else login.action
        info(f"envd-server login `{login.login_name}` for context {login.context}: {action}"
             + (f" ({login.reason})" if login.reason else ""))
    for file_name, why in plan.to_json()["not_imported"].items():
        info(f"Not imported yet: {file_name}, {why}")
