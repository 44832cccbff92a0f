"""What the core itself provides, registered as the plugin ``core`` like any other."""

from __future__ import annotations

from envd_core.contexts.store import FileStore
from envd_core.hookspecs import hookimpl


@hookimpl
def envd_context_stores() -> list[type]:
    return [FileStore]
