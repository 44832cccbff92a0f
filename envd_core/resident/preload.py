"""What the resident server imports before it serves: everything a command would import.

Driven by what is installed, never by a list of plugin names:

* every module of ``envd_core`` (the CLI, the library, the BuildKit client with grpc and the
  protobuf messages), except :mod:`envd_core.testing` (pytest's), and the third-party modules
  it imports inside functions (:data:`CORE_LAZY`);
* every enabled entry-point plugin, as the CLI loads them (:meth:`Plugins.create`), and every
  module of each plugin's package;
* the modules each builder and runner type declares in its ``preload`` (what it imports inside
  its methods: the docker SDK, the kubernetes client).

Importing must be free of per-user state (the rule in docs/resident.md): no threads, channels,
clients or reads of the environment at import. :func:`preload` checks the first: a module that
started a thread is reported, and the server then refuses to fork (a forked child would hold a
copy of a thread's locks with no thread behind them).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

#: Third-party modules envd_core imports inside functions, found by diffing ``sys.modules``
#: around a cached rebuild run in process after :func:`preload` (0.16-0.2 s of a served build's
#: child went to importing h2 before they were listed): the session's HTTP/2 server
#: (``buildkit/session/h2serve.py``), grpc's stubs, the Starlark interpreter.
CORE_LAZY = ("h2.connection", "h2.config", "h2.events", "h2.exceptions", "h2.errors",
             "h2.settings", "grpc._channel", "grpc._simple_stubs", "grpc.experimental",
             "starlark",
             # imported by the server's own first os.wait4 (for its rusage) and by
             # ENVD_TIMINGS: an import after the preload makes every child scan sys.modules
             # for the definition cache key again (pipeline/sources.py, editable_roots)
             "resource")

#: Module names never preloaded: test helpers (import pytest), entry scripts.
_SKIP = ("envd_core.testing", "__main__")


def _walk(package: ModuleType, errors: list[str]) -> int:
    """Import every module under ``package``; the number imported."""
    paths = getattr(package, "__path__", None)
    if paths is None:
        return 0
    count = 0

    def failed(name: str) -> None:
        errors.append(f"{name}: cannot walk")

    for info in pkgutil.walk_packages(paths, package.__name__ + ".", onerror=failed):
        name = info.name
        if name.endswith(_SKIP) or ".tests" in name or name.endswith(".conftest"):
            continue
        count += _import(name, errors)
    return count


def _import(name: str, errors: list[str]) -> int:
    if name in sys.modules:
        return 0
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - one module less, the child imports it itself
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
        return 0
    return 1


def preload() -> tuple[int, list[str]]:
    """Import everything; ``(modules in sys.modules, problems)``."""
    import threading

    errors: list[str] = []
    import envd_core

    _walk(envd_core, errors)
    for name in CORE_LAZY:
        _import(name, errors)
    from envd_core.plugins import Plugins

    plugins = Plugins.create()
    errors.extend(plugins.warnings())
    for info in plugins.infos():
        module = plugins.pm.get_plugin(info.name) if plugins.loaded(info.name) else None
        if isinstance(module, ModuleType) and info.name != "core":
            top = sys.modules.get(module.__name__.partition(".")[0])
            if top is not None:
                _walk(top, errors)
    for kind in (plugins.builder_types, plugins.runner_types):
        for cls in kind.values():
            for name in cls.preload:
                _import(name, errors)
    Plugins.keep_ready()
    from envd_core.pipeline.sources import prime

    prime()  # the definition cache key's sources, once here, not in every child (its docstring)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate()
                          if t is not threading.main_thread())
        errors.append(f"threads started while importing: {names}")
    return len(sys.modules), errors
