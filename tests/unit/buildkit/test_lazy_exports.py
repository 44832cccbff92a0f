"""The lazily re-exported names of ``envd_core.buildkit`` and ``.session`` agree three ways.

Each package lists its public names three times: ``_LAZY`` (what ``__getattr__`` imports at run
time), ``__all__``, and the ``if TYPE_CHECKING:`` imports mypy reads instead. A name added to one
list and not the others would be untyped for mypy or missing at run time.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _type_checking_imports(path: Path, package: str) -> dict[str, str]:
    """name -> submodule, from the ``from <package>.<sub> import …`` under ``if TYPE_CHECKING``."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                assert stmt.module is not None and stmt.module.startswith(package + ".")
                for alias in stmt.names:
                    found[alias.asname or alias.name] = stmt.module.rsplit(".", 1)[1]
    return found


@pytest.mark.parametrize(
    ("package", "path"),
    [
        ("envd_core.buildkit", "envd_core/buildkit/__init__.py"),
        ("envd_core.buildkit.session", "envd_core/buildkit/session/__init__.py"),
    ],
)
def test_lazy_names_all_and_typing_imports_agree(package: str, path: str) -> None:
    module = importlib.import_module(package)
    lazy: dict[str, str] = module._LAZY
    assert sorted(module.__all__) == sorted(lazy)
    assert _type_checking_imports(ROOT / path, package) == lazy
