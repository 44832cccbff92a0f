"""Client-side BuildKit session services: local dirs, exports, registry auth, secrets.

`Session` bundles them and attaches to a daemon over ``Control.Session``. Importing this
package is cheap; grpc loads when a session starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What mypy sees: the same names, imported eagerly (a unit test keeps the two in step).
    from envd_core.buildkit.session.auth import AuthProvider, Credentials
    from envd_core.buildkit.session.core import Session
    from envd_core.buildkit.session.filesend import ExportTarget
    from envd_core.buildkit.session.filesync import LocalDir, TransferStats
    from envd_core.buildkit.session.patterns import PatternError, PatternMatcher
    from envd_core.buildkit.session.secrets import SecretSource

# name -> submodule that defines it
_LAZY: dict[str, str] = {
    "Session": "core",
    "LocalDir": "filesync",
    "TransferStats": "filesync",
    "ExportTarget": "filesend",
    "AuthProvider": "auth",
    "Credentials": "auth",
    "SecretSource": "secrets",
    "PatternMatcher": "patterns",
    "PatternError": "patterns",
}

__all__ = [
    "AuthProvider",
    "Credentials",
    "ExportTarget",
    "LocalDir",
    "PatternError",
    "PatternMatcher",
    "SecretSource",
    "Session",
    "TransferStats",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
