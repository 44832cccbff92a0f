"""The table of every `build.envd` built-in: dotted name → Python function (graph first)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from envd_core.envdfile.lang.install import INSTALL
from envd_core.envdfile.lang.modules import CONFIG, DATA, DATA_PATHS, IO, RUNTIME
from envd_core.envdfile.lang.universe import UNIVERSE
from envd_core.errors import PluginError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Names a vendor may not replace: the sandbox and load() rely on them.
_RESERVED = {"load", "struct", "_build_context_dir"}


#: Upstream functions this envd records in the graph but cannot build, with the reason. With
#: ``evaluate(check_buildable=True)`` (what ``envd build`` uses) a call to one fails at its
#: position in the file; graph-only tools (the upstream comparison) evaluate them freely.
UNBUILDABLE: dict[str, str] = {}


def standard_table() -> dict[str, Callable[..., Any]]:
    """Upstream envd's built-ins, keyed ``name`` (universe) or ``module.name``."""
    table: dict[str, Callable[..., Any]] = dict(UNIVERSE)
    for module, funcs in (
        ("install", INSTALL), ("config", CONFIG), ("io", IO), ("runtime", RUNTIME), ("data", DATA)
    ):
        table.update({f"{module}.{name}": func for name, func in funcs.items()})
    return table


def builtin_table(extra: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The standard table plus vendor functions; a vendor may add or override a name."""
    table = standard_table()
    for key, func in extra.items():
        name: object = key  # a vendor plugin may hand over any key: checked at run time
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in _RESERVED:
            raise PluginError(
                f"build function name `{name}` is not valid; use `module.function` "
                "or `function` (letters, digits, underscores)"
            )
        modules = {n.split(".", 1)[0] for n in table if "." in n}
        if "." not in name and name in modules:
            raise PluginError(
                f"build function name `{name}` would hide the module `{name}`; "
                f"use `{name}.<function>` to add to it"
            )
        if name.startswith("data.path"):
            raise PluginError(f"build function name `{name}` clashes with `data.path`")
        if not callable(func):
            raise PluginError(f"build function `{name}` is not callable (got {type(func)})")
        table[name] = func
    return table


def data_paths() -> dict[str, str]:
    """String members of ``data.path`` (well-known dataset cache directories)."""
    return dict(DATA_PATHS)
