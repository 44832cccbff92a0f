"""The ``envd`` command line: parse, call the library, render.

The click command group lives in :mod:`envd_core.cli.app` (``create_cli``, ``run``, ``App``,
``COMMANDS``, re-exported here on first use). This package's own import is light on purpose:
:func:`main` first offers the invocation to the fast path of the read-only context commands
(:mod:`envd_core.cli.fast`), which imports neither click nor a plugin.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envd_core.cli.app import COMMANDS, App, LazyGroup, create_cli, run

__all__ = ["COMMANDS", "App", "LazyGroup", "create_cli", "main", "run"]


def __getattr__(name: str) -> object:
    # the click group, imported only by the invocations that need it
    if name in ("COMMANDS", "App", "LazyGroup", "create_cli", "run"):
        from envd_core.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'envd_core.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point.

    ``envd context ls/show/use`` are served without click or plugins when they can be
    (:func:`envd_core.cli.fast.run_fast`); next, a non-interactive command is handed to the
    resident process when one runs (:mod:`envd_core.resident.client`, docs/resident.md);
    otherwise the full CLI runs here, and when the fast path declined for want of a fresh
    plugin index, it writes one.
    """
    from envd_core.cli.fast import _exit_now, run_fast, wants_index

    argv = sys.argv[1:]
    code = run_fast(argv)
    if code is not None:
        sys.exit(code)
    from envd_core.resident.client import run_resident

    code = run_resident(argv)
    if code is not None:
        _exit_now(code)  # the child did the work: this process has nothing to tear down
        sys.exit(code)
    from envd_core.cli.app import main as full_main

    full_main(argv, write_index=wants_index(argv))
