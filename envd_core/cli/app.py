"""The ``envd`` command group: parse, call the library, render.

Subcommands are imported only when invoked (click's lazy-group recipe), so ``envd context ls``
loads neither grpc nor anything a build needs. Tests build a CLI around their own plugin manager
with :func:`create_cli`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import click

from envd_core import __version__
from envd_core.cli import aliases

#: name -> "module:attribute" of each top-level command, imported on use.
COMMANDS: dict[str, str] = {
    "context": "envd_core.cli.context:context",
    "plugins": "envd_core.cli.plugins_cmd:plugins",
    "build": "envd_core.cli.build:build",
    "bootstrap": "envd_core.cli.bootstrap:bootstrap",
    "builder": "envd_core.cli.builder_cmd:builder",
    "prune": "envd_core.cli.cache:prune",
    "disk-usage": "envd_core.cli.cache:disk_usage",
    "completion": "envd_core.cli.completion:completion",
    "up": "envd_core.cli.up:up",
    "run": "envd_core.cli.up:run",
    "down": "envd_core.cli.envs:down",
    "sync": "envd_core.cli.sync:sync",
    "envs": "envd_core.cli.envs:envs",
    "exec": "envd_core.cli.lifecycle:exec_",
    "pause": "envd_core.cli.lifecycle:pause",
    "resume": "envd_core.cli.lifecycle:resume",
    "top": "envd_core.cli.lifecycle:top",
    "images": "envd_core.cli.images:images",
    "version": "envd_core.cli.version:version",
    "init": "envd_core.cli.init_new:init",
    "new": "envd_core.cli.init_new:new",
    "login": "envd_core.cli.login:login",
    "logout": "envd_core.cli.login:logout",
    "resident": "envd_core.cli.resident_cmd:resident",
    "debug": "envd_core.cli.debug:debug",
}


class AliasGroup(click.Group):
    """A group that also answers to other names of its commands (``aliases``: alias -> name,
    upstream's, from :mod:`envd_core.cli.aliases`). ``--help`` shows them beside each name,
    as upstream's does; completion offers only the names."""

    def __init__(self, *args: Any, aliases: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in self.aliases:
            found = super().get_command(ctx, self.aliases[cmd_name])
        return found

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            others = [alias for alias, target in self.aliases.items() if target == name]
            rows.append((", ".join([name, *others]), command))
        if rows:
            limit = formatter.width - 6 - max(len(label) for label, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(label, command.get_short_help_str(limit))
                                    for label, command in rows])


class LazyGroup(AliasGroup):
    """A group whose subcommands are imported on first use.

    Built-in commands come from ``lazy``; a name that is not built in is looked up in the
    plugins' ``envd_commands`` (``plugin_commands``), so a built-in command never loads a
    plugin's command table, let alone its modules. An alias of a built-in command resolves
    before the plugins are asked (plugins cannot take an alias's name either).
    """

    def __init__(
        self,
        *args: Any,
        lazy: dict[str, str],
        plugin_commands: Callable[[click.Context], dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy
        self.plugin_commands = plugin_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx)) | {
            name for name, target in self.lazy.items() if _module_exists(target)
        }
        if self.plugin_commands is not None:
            names |= set(self.plugin_commands(ctx))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            cmd_name = self.aliases.get(cmd_name, cmd_name)
        if cmd_name in self.lazy and _module_exists(self.lazy[cmd_name]):
            return _load(self.lazy[cmd_name])
        found = click.Group.get_command(self, ctx, cmd_name)
        if found is None and self.plugin_commands is not None and not cmd_name.startswith("-"):
            target = self.plugin_commands(ctx).get(cmd_name)
            if target is not None:
                return _load(target, plugin=True)
        return found


def _load(target: str, *, plugin: bool = False) -> click.Command:
    module_name, _, attr = target.partition(":")
    try:
        found: object = importlib.import_module(module_name.strip())
        for part in attr.strip().split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        if not plugin:
            raise
        from envd_core.errors import PluginError

        raise PluginError(f"command `{target}` of a plugin cannot be loaded: {exc}") from None
    if not isinstance(found, click.Command):
        from envd_core.errors import PluginError

        raise PluginError(f"plugin command `{target}` is not a click command")
    return found


def _module_exists(target: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


class App:
    """Per-invocation state shared by every command (``ctx.obj``)."""

    def __init__(self, plugins_factory: Callable[[], Any], *, context: str | None, debug: bool):
        self._plugins_factory = plugins_factory
        self._plugins: Any = None
        self._contexts: Any = None
        self.context_flag = context
        self.debug = debug

    @property
    def plugins(self) -> Any:
        if self._plugins is None:
            self._plugins = self._plugins_factory()
            for line in self._plugins.warnings():
                click.echo(f"envd: warning: {line}", err=True)
        return self._plugins

    @property
    def contexts(self) -> Any:
        if self._contexts is None:
            from envd_core.contexts.operations import ContextOperations

            self._contexts = ContextOperations(self.plugins)
        return self._contexts

    def resolve(self) -> Any:
        """The context in force (flag, env, project file, current) and why."""
        return self.contexts.resolve(flag=self.context_flag)


def _default_plugins() -> Any:
    from envd_core.plugins import Plugins

    return Plugins.create()


def _indexed_plugins() -> Any:
    """The installed plugins, recorded in the plugin index for the fast path's next run."""
    from envd_core.plugin_index import write

    plugins = _default_plugins()
    write(plugins)
    return plugins


def create_cli(plugins_factory: Callable[[], Any] | None = None) -> click.Group:
    """Build the ``envd`` command group around a plugin manager factory."""
    make = plugins_factory or _default_plugins

    def plugins_of(ctx: click.Context) -> Any:
        # one plugin manager per run, shared by the command table and the commands
        meta = ctx.find_root().meta
        if "envd.plugins" not in meta:
            meta["envd.plugins"] = make()
        return meta["envd.plugins"]

    def plugin_commands(ctx: click.Context) -> dict[str, str]:
        return plugins_of(ctx).commands(  # type: ignore[no-any-return]
            {**COMMANDS, **aliases.TOP})

    @click.group(
        cls=LazyGroup,
        lazy=COMMANDS,
        aliases=aliases.TOP,
        plugin_commands=plugin_commands,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.option("--context", "context_name", metavar="NAME", help="Use this context.")
    @click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
    @click.version_option(__version__, "--version", "-v", prog_name="envd")
    @click.pass_context
    def cli(ctx: click.Context, context_name: str | None, debug: bool) -> None:
        """envd: build development environments on BuildKit, run them anywhere."""
        ctx.obj = App(lambda: plugins_of(ctx), context=context_name, debug=debug)

    return cli


def _want_debug(argv: list[str]) -> bool:
    return "--debug" in argv or bool(os.environ.get("ENVD_DEBUG"))


def _hint_line(hint: str) -> str:
    """A hint as one readable line: its lines joined with ``; `` rather than escaped as ``\\n``
    (a hint is advice, never a log; logs are shown as real lines by the progress view)."""
    from envd_core.errors import one_line

    return one_line("; ".join(part.strip() for part in hint.splitlines() if part.strip()))


def run(cli: click.Group, argv: list[str] | None = None) -> int:
    """Run ``cli`` and turn every error into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = _want_debug(args)
    # Plugins see no App: their debug lines follow ENVD_DEBUG, set for this run only.
    lend = debug and "ENVD_DEBUG" not in os.environ
    if lend:
        os.environ["ENVD_DEBUG"] = "1"
    try:
        return _run(cli, args, debug)
    finally:
        if lend:
            os.environ.pop("ENVD_DEBUG", None)


def _run(cli: click.Group, args: list[str], debug: bool) -> int:
    from envd_core.errors import EnvdError, one_line

    # grpc's C core logs handshake failures straight to stderr; envd reports them itself.
    os.environ.setdefault("GRPC_VERBOSITY", "DEBUG" if debug else "NONE")
    try:
        # Without standalone mode click returns ctx.exit(code)'s code instead of exiting.
        code = cli.main(args=args, prog_name="envd", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except EnvdError as exc:
        if debug:
            import traceback

            traceback.print_exc()
            from envd_core.envdfile.errors import BuildFileError

            if isinstance(exc, BuildFileError) and exc.excerpt:  # the caret view of the file
                click.echo(exc.excerpt, err=True)
        click.echo(f"envd: {one_line(exc.message)}", err=True)
        if exc.hint:
            click.echo(f"hint: {_hint_line(exc.hint)}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        # click's own rendering is a three-line usage block; envd reports every error as one
        # `envd: …` line (+ hint) so scripts and users see the same shape everywhere.
        click.echo(f"envd: {one_line(exc.format_message())}", err=True)
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(f"hint: see `{exc.ctx.command_path} --help`", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("envd: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("envd: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last line of defence: one line unless --debug
        if debug:
            raise
        click.echo(
            f"envd: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            "(rerun with --debug for details)",
            err=True,
        )
        return 1


def main(argv: list[str] | None = None, *, write_index: bool = False) -> None:
    """Run the full CLI and exit; with ``write_index`` the plugins loaded are recorded in the
    plugin index (for the fast path of the read-only context commands)."""
    args = sys.argv[1:] if argv is None else argv
    code = run(create_cli(_indexed_plugins if write_index else None), args)
    if "grpc" in sys.modules or "docker" in sys.modules:  # e.g. `envd run`: no grpc, the SDK
        exit_now(code)
    sys.exit(code)


def exit_now(code: int, before_exit: Callable[[], None] | None = None) -> NoReturn:
    """End the process once the command is done, without the interpreter's teardown.

    After a command that talked to BuildKit, grpc's core shutdown (registered with
    ``Py_AtExit``) and tearing down the modules took 0.2-0.4 s on the test machine: a fifth of
    a cached rebuild, spent after the result was printed. Everything a normal exit does that can
    matter still happens, in its order: non-daemon threads are joined, ``atexit`` handlers run
    (logging flushes its handlers there), stdout and stderr are flushed; then ``before_exit``
    (a resident child reports its exit status there). Only for the console script: in-process
    callers (tests, ``create_cli``) never get here.
    """
    import atexit
    import contextlib
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to save
            stream.flush()
    if before_exit is not None:  # a resident child tells its client (resident/child.py)
        with contextlib.suppress(Exception):
            before_exit()
    os._exit(code)
