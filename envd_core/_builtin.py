"""What the core itself provides, registered as the plugin ``core`` like any other."""

from __future__ import annotations

from envd_core.contexts.model import DEFAULT_NAME, Context, default_context
from envd_core.contexts.sqlite_store import SqliteStore
from envd_core.contexts.store import FileStore
from envd_core.hookspecs import hookimpl


@hookimpl
def envd_context_stores() -> list[type]:
    return [FileStore, SqliteStore]


@hookimpl
def envd_default_contexts() -> list[Context]:
    """``default``: dockerd's embedded BuildKit, as upstream envd's first context."""
    return [default_context()]


@hookimpl
def envd_default_current() -> str:
    """``default`` is current on first use unless a distribution names another context."""
    return DEFAULT_NAME
