"""The contract between envd and its plugins: every hook, documented here and only here.

A plugin is a module (or object) with functions decorated by :data:`envd_core.hookimpl`, exposed
through the entry-point group ``envd``::

    [project.entry-points.envd]
    mycloud = "envd_mycloud"

Hooks are called with keyword arguments and evolve only by adding arguments, so a plugin written
for an older envd keeps working. Hooks that provide *types* return classes; the core validates
each class (base class, a unique non-empty ``name``) and names the offending plugin on error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from envd_core.builder import Builder
    from envd_core.contexts.model import Context
    from envd_core.contexts.store import ContextStore
    from envd_core.pipeline.causes import Cause
    from envd_core.runner import Runner

PROJECT = "envd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def envd_builder_types() -> Sequence[type[Builder]]:
    """Return the builder types this plugin provides.

    **When:** once per process, when envd first needs the list of builder types (creating or
    using a context, ``envd plugins ls``). Keep it cheap: return classes, import nothing heavy.

    **Returns:** a list of :class:`envd_core.builder.Builder` subclasses, each with a unique
    ``name``. Two plugins providing the same name is an error naming both.

    **Example**::

        @hookimpl
        def envd_builder_types():
            return [TcpBuilder, UnixBuilder]

    *Since 0.1.*
    """


@hookspec
def envd_runner_types() -> Sequence[type[Runner]]:
    """Return the runner types this plugin provides.

    **When:** once per process, when envd first needs the list of runner types.

    **Returns:** a list of :class:`envd_core.runner.Runner` subclasses with unique names.

    **Example**::

        @hookimpl
        def envd_runner_types():
            return [DockerRunner]

    *Since 0.1.*
    """


@hookspec
def envd_context_stores() -> Sequence[type[ContextStore]]:
    """Return the context store types this plugin provides.

    **When:** once per process, before the first context is read. The store in use is chosen
    by ``ENVD_CONTEXT_STORE`` (default ``file``, the JSON file store embedded in core).

    **Returns:** a list of :class:`envd_core.contexts.store.ContextStore` subclasses with
    unique names.

    **Example**::

        @hookimpl
        def envd_context_stores():
            return [VaultStore]

    *Since 0.1.*
    """


@hookspec
def envd_build_functions() -> Mapping[str, Callable[..., Any]]:
    """Return extra functions for the ``build.envd`` language.

    **When:** once per build, before ``build.envd`` is evaluated.

    **Returns:** a mapping of dotted names to callables. ``"install.tensorrt"`` adds a function
    to an existing module, ``"mycorp_login"`` adds a top-level function. Each callable receives
    the build graph being built as its first positional argument, then the script's arguments.
    Names must not replace built-in functions.

    **Example**::

        @hookimpl
        def envd_build_functions():
            def tensorrt(graph, version="10"):
                graph.apt_packages.append(f"tensorrt={version}*")
            return {"install.tensorrt": tensorrt}

    *Since 0.1.*
    """


@hookspec
def envd_build_failure_causes() -> Sequence[Cause]:
    """Return more causes of failed builds, each with the fix envd should suggest.

    **When:** once per ``envd build``, before the build starts; the rows are tried when a build
    fails, before envd's own table (:data:`envd_core.pipeline.causes.BUILTIN_CAUSES`), so a
    vendor can name its own mirror or registry more precisely.

    **Returns:** a sequence of :class:`~envd_core.pipeline.causes.Cause`: a stable ``name``
    (reported as ``cause`` in JSON), regular expressions searched in the daemon's error and the
    failed step's log, the ``reason`` for the ``envd:`` line and the ``hint``. Both texts may use
    the expressions' named groups as ``{placeholders}``.

    **Example**::

        @hookimpl
        def envd_build_failure_causes():
            return [Cause(
                name="corp-mirror-down",
                patterns=(r"mirror\\.corp\\.example.*\\b50[23]\\b",),
                reason="the company package mirror is down",
                hint="see https://status.corp.example, or build with --use-proxy",
                stages=("step",),
            )]

    *Since 0.1.*
    """


@hookspec
def envd_default_contexts() -> Sequence[Context]:
    """Return the contexts a fresh context store starts with.

    **When:** once, when a store is used for the first time (no ``contexts.json`` yet). The core's
    own ``default`` context (dockerd's embedded BuildKit) comes through this hook too, from the
    plugin ``core``; a distribution adds its own beside it. Existing stores are never changed:
    what a user stored is theirs.

    **Returns:** a list of :class:`envd_core.contexts.model.Context`. The seeded contexts are
    ordinary user contexts (editable, removable). A name given by two plugins is an error naming
    both.

    **Example**::

        @hookimpl
        def envd_default_contexts():
            return [Context(name="acme-laptop", builder="moby-worker",
                            builder_address="envd_buildkitd")]

    *Since 0.2.*
    """


@hookspec(firstresult=True)
def envd_default_current() -> str | None:
    """Return the name of the context that is current on first use.

    **When:** with :func:`envd_default_contexts`, when a store is used for the first time. The
    first plugin that returns a name wins; distributions are asked before the core, whose answer
    is ``default``.

    **Returns:** the name of a context seeded by :func:`envd_default_contexts` or of a team
    context (:func:`envd_team_contexts`), or ``None`` to leave the choice to another plugin. A
    name that is neither is an error naming the plugin.

    **Example**::

        @hookimpl
        def envd_default_current():
            return "acme-shared"

    *Since 0.2.*
    """


@hookspec
def envd_team_contexts() -> Sequence[Context]:
    """Return read-only team contexts: shared builders every user of the plugin gets.

    **When:** once per process, when contexts are first listed or resolved. They join the
    contexts of ``/etc/envd/contexts.d/*.json`` (``ENVD_TEAM_CONTEXTS_DIR``) as a layer over the
    user's store: usable (``envd context use``, ``--context``), never editable, and a user
    context of the same name cannot be created.

    **Returns:** a list of :class:`envd_core.contexts.model.Context`. A name given by two
    plugins is an error naming both; a name also in the system directory is taken from the
    directory (the machine's administrator has the last word).

    **Example**::

        @hookimpl
        def envd_team_contexts():
            return [Context(name="acme-shared", builder="tcp",
                            builder_address="buildkit.acme.internal:1234",
                            description="Acme's shared builder")]

    *Since 0.2.*
    """


@hookspec
def envd_commands() -> Mapping[str, str]:
    """Return extra top-level ``envd`` commands or command groups, imported only when run.

    **When:** when ``envd`` is given a command name it does not know, and for ``envd --help``.
    Built-in commands are looked up first and never ask plugins, so ``envd context ls`` never
    imports a plugin's command modules.

    **Returns:** a mapping of command names to ``"module:attribute"`` strings naming a
    :class:`click.Command` or :class:`click.Group`. The string (not the command) keeps start-up
    lazy. A name that is a built-in command, or given by two plugins, is an error naming the
    plugin. The command receives the CLI's state with ``@click.pass_obj`` like built-ins.

    **Example**::

        @hookimpl
        def envd_commands():
            return {"acme": "acme_envd.cli:acme"}

    *Since 0.2.*
    """


@hookspec
def envd_option_defaults() -> Mapping[str, Mapping[str, str]]:
    """Return default values for builder and runner options.

    **When:** each time a builder or runner is created from a context. An option the context
    sets always wins; a default fills only what it leaves unset. ``envd context inspect`` shows
    the options in force.

    **Returns:** a mapping of ``"builder.<type>"`` or ``"runner.<type>"`` to ``{option: value}``,
    e.g. a CA bundle for every builder (``ca-bundle``), a BuildKit image or registry mirrors for
    a builder type that declares such options. Each option must be one the type declares and
    each value must parse (a ``path`` option must exist), or the error names the plugin. Two
    plugins giving the same option is an error. The key ``"build-file"`` sets the defaults of
    the build-file evaluation limits (``depth``, ``memory``, ``steps``, ``time``; see
    docs/limits.md); ``ENVD_BUILD_LIMITS`` still overrides them.

    **Example**::

        @hookimpl
        def envd_option_defaults():
            return {"builder.tcp": {"ca-bundle": "/etc/ssl/acme/ca.pem"}}

    *Since 0.2.*
    """


@hookspec
def envd_distribution() -> Mapping[str, str] | None:
    """Name the envd distribution this plugin makes: a company's packaged envd.

    **When:** for ``envd plugins ls`` and ``envd version``, and to mark the plugins installed by
    the same Python package as ``distribution`` in ``envd plugins ls``.

    **Returns:** ``{"name": ..., "version": ...}`` (``version`` defaults to the version of the
    Python package that installed the plugin), or ``None``. Two plugins naming a distribution
    is an error naming both: one envd is one distribution.

    **Example**::

        @hookimpl
        def envd_distribution():
            return {"name": "Acme envd", "version": "2026.11"}

    *Since 0.2.*
    """
