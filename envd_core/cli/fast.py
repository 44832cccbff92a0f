"""The fast path of the quick commands: ``envd context ls``, ``show``, ``use`` and ``envs ls``.

These are what people put in shell prompts and scripts, so they must start about as fast as
upstream's Go binary. Importing click, attrs and pluggy and then every plugin costs several times
the rest of such a command; this path imports none of them. It is not a second implementation:

* the store is read (and, for ``use``, written) by the same :class:`FileStore`, the team
  contexts layered by the same :func:`envd_core.contexts.team.view`, the context in force found
  by the same :func:`envd_core.contexts.resolve.resolve`;
* output comes from the same renderers the click commands use
  (:func:`envd_core.cli.render.context_list` and friends);
* "is this builder type installed?" is answered by the plugin index
  (:mod:`envd_core.plugin_index`), which the full CLI wrote from the loaded plugins;
* ``envs ls`` calls the light lister the context's runner type declares
  (:attr:`envd_core.runner.Runner.lister`, recorded in the index) and renders with
  :func:`envd_core.cli.render.environment_list`: the full CLI's ``envs ls`` makes the same call.

Anything unusual declines (returns ``None``) and the full CLI runs instead, from the start:
another argument or option, ``--help``, ``--debug``, a store other than the file store, no store
file yet (the first run seeds it through the plugins), a stale or missing plugin index, a plugin
that failed to load or that provides team contexts or stores, team-file warnings, a current
context that is gone, upstream envd's contexts (the first-run hint), a runner type without a
light lister or a plugin with ``envd_option_defaults`` (for ``envs ls``), and every error: the
full CLI then reports it in its one-line form. Declining after a failed ``use`` is safe: the
store transaction writes nothing when its block raises; after a failed ``envs ls`` the full CLI
lists again.
"""

from __future__ import annotations

import os
import sys

from envd_core.cli.aliases import canonical

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: envd_core.contexts.upstream.HINT_MARKER (that module is not imported here: it loads attrs
#: and the plugin manager); a test checks the two agree.
HINT_MARKER = ".upstream-import-hint"
_FORMAT_FLAGS = ("--format", "-f")
_FORMATS = ("table", "json")


def _parse(argv: Sequence[str]) -> tuple[str, str, str | None, str | None] | None:
    """``(command, format, name, --context)`` of an invocation this path serves, else None."""
    args = list(argv)
    flag: str | None = None
    if args[:1] == ["--context"] and len(args) > 1:
        flag, args = args[1], args[2:]
    elif args and args[0].startswith("--context="):
        flag, args = args[0].partition("=")[2], args[1:]
    if canonical(args[:2]) == ["envs", "ls"]:  # also upstream's `env ls`, `e l`, `envs list`
        command, rest = "envs", args[2:]
    elif len(args) < 2 or args[0] != "context" or args[1] not in ("ls", "show", "use"):
        return None
    else:
        command, rest = args[1], args[2:]
    fmt, name = "table", None
    i = 0
    while i < len(rest):
        arg = rest[i]
        if command != "use" and arg in _FORMAT_FLAGS and i + 1 < len(rest):
            fmt, i = rest[i + 1], i + 2
        elif command != "use" and arg.startswith("--format="):
            fmt, i = arg.partition("=")[2], i + 1
        elif command != "use" and arg.startswith("-f") and len(arg) > 2:
            fmt, i = arg[2:], i + 1
        elif command == "use" and arg == "--name" and i + 1 < len(rest) and name is None:
            name, i = rest[i + 1], i + 2
        elif command == "use" and arg.startswith("--name=") and name is None:
            name, i = arg.partition("=")[2], i + 1
        elif command == "use" and not arg.startswith("-") and name is None:
            name, i = arg, i + 1
        else:  # --help, --status, a second name, anything else: click's to handle
            return None
    if fmt not in _FORMATS or (command == "use" and not name):
        return None
    if flag is not None and (not flag or flag.startswith("-")):
        return None
    return command, fmt, name, flag


def run_fast(argv: Sequence[str]) -> int | None:
    """Serve ``argv`` on the fast path and return the exit code, or ``None`` to decline."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    env = os.environ
    if env.get("ENVD_DEBUG") or env.get("_ENVD_COMPLETE") or env.get("ENVD_TRACE_HOOKS"):
        return None
    if (env.get("ENVD_CONTEXT_STORE") or "file") != "file":
        return None
    try:
        code = _serve(*parsed)
        if code is not None:
            _exit_now(code)
        return code
    except BrokenPipeError:
        return 1
    except Exception:  # noqa: BLE001 - the full CLI runs again and reports it its own way
        return None


def _serve(command: str, fmt: str, name: str | None, flag: str | None) -> int | None:
    from envd_core.contexts.store import FileStore
    from envd_core.contexts.team import merge, read_dir, team_dir
    from envd_core.contexts.team import use as use_context
    from envd_core.contexts.team import view as team_view
    from envd_core.plugin_index import RUNNER_HOOKS, read_for_contexts

    store = FileStore()
    if not store.exists():
        return None
    user = store.load()
    if _hint_due(store.directory_name, list(user.contexts)):
        return None
    index = read_for_contexts()
    if index is None:
        return None
    found, warnings = read_dir(team_dir())
    if warnings:
        return None
    team = merge(found)
    if command == "use":
        assert name is not None
        with store.transaction() as contexts:
            use_context(contexts, team, name)
        from envd_core.cli.render import context_used

        for line in context_used(name, os.environ):
            sys.stderr.write(line + "\n")
        return 0
    layered, gone = team_view(user, team)
    if gone is not None:
        return None
    if command == "ls":
        from envd_core.cli.render import context_list

        text = context_list(layered, index.installed, fmt)
    elif command == "envs":
        from envd_core.contexts.resolve import resolve

        context = resolve(layered, flag=flag).context
        lister = index.listers.get(context.runner)
        if lister is None or context.runner not in index.runners or RUNNER_HOOKS & index.hooks:
            return None
        from envd_core.cli.render import environment_list
        from envd_core.listing import run_lister

        listed = run_lister(lister, context.runner_address, context.runner_options,
                            context.name)
        text = environment_list(listed, fmt)
    else:
        from envd_core.cli.render import context_show
        from envd_core.contexts.resolve import resolve

        resolved = resolve(layered, flag=flag)
        text = context_show(resolved, layered.origin(resolved.context.name), fmt)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def _exit_now(code: int) -> None:
    """End the process here, without the interpreter's teardown, when that loses nothing.

    Tearing the interpreter down (clearing every module, collecting, freeing each object) cost
    3-4 ms of CPU of a ~35 ms ``envd envs ls`` on the project's VM (``os.wait4`` of interleaved
    runs, with and without), a tenth of upstream's whole command: the one part of a quick
    command that is pure overhead. It is skipped only when nothing can depend on it:

    * this process is the ``envd`` console script: its ``__main__`` is a file named ``envd``
      that imported :func:`envd_core.cli.main`, which returns into ``sys.exit`` and nothing
      else; embedders (tests' probes, ``python -c``, a resident parent) keep their teardown;
    * no ``atexit`` callback is registered (coverage, a ``weakref.finalize``, a plugin's
      cleanup) and no other thread runs;
    * stdout and stderr are flushed first; if that fails, the caller's error handling runs.
    """
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    cli = sys.modules.get("envd_core.cli")
    if (not script or os.path.basename(script) != "envd" or cli is None
            or getattr(main, "main", None) is not getattr(cli, "main", None)):
        return
    import atexit  # built in: no file is read

    if getattr(atexit, "_ncallbacks", lambda: 1)():
        return
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _hint_due(config_dir: object, names: list[str]) -> bool:
    """Whether the full CLI may print its one-time hint to import upstream envd's contexts.

    The cheap part of :func:`envd_core.contexts.upstream.first_run_hint`'s condition (upstream's
    file exists, the hint was never shown, ours hold only ``default``); when it holds, the full
    CLI runs and decides, so the hint and its marker stay that function's alone.
    """
    from envd_core.contexts.model import DEFAULT_NAME

    upstream = os.path.join(os.path.expanduser("~"), ".config", "envd", "contexts")
    return (
        os.path.isfile(upstream)
        and not os.path.exists(os.path.join(str(config_dir), HINT_MARKER))
        and names == [DEFAULT_NAME]
    )


def wants_index(argv: Sequence[str]) -> bool:
    """Whether the full CLI running ``argv`` should (re)write the plugin index: only for the
    invocations this path serves, whose next run can then be fast."""
    return _parse(argv) is not None
