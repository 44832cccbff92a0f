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
