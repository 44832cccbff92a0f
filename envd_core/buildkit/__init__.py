"""A BuildKit client: transport, Control RPCs, LLB graphs, exporters and progress rendering.

This package speaks BuildKit and nothing else (no contexts, no plugins). Importing it is cheap:
grpc and protobuf load only when a submodule that needs them is used. Public names are
re-exported lazily, so ``from envd_core.buildkit import BuildkitClient`` imports ``client`` (and
grpc) at that moment, not before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What mypy sees: the same names, imported eagerly (a unit test keeps the two in step).
    from envd_core.buildkit.client import (
        BuildkitClient,
        BuildkitVersion,
        UsageRecord,
        Worker,
        probe,
    )
    from envd_core.buildkit.exporters import Exporter
    from envd_core.buildkit.llb import State, diff, git, http, image, local, merge, scratch, source
    from envd_core.buildkit.progress import BuildTrace, ProgressPrinter
    from envd_core.buildkit.transport import (
        Connection,
        TLSConfig,
        connect_address,
        connect_bridge,
        connect_tcp,
        connect_unix,
        dial_process,
        parse_go_duration,
    )

# name -> submodule that defines it
_LAZY: dict[str, str] = {
    "TLSConfig": "transport",
    "Connection": "transport",
    "connect_unix": "transport",
    "connect_tcp": "transport",
    "connect_bridge": "transport",
    "connect_address": "transport",
    "dial_process": "transport",
    "parse_go_duration": "transport",
    "BuildkitClient": "client",
    "Worker": "client",
    "BuildkitVersion": "client",
    "UsageRecord": "client",
    "probe": "client",
    "State": "llb",
    "image": "llb",
    "local": "llb",
    "scratch": "llb",
    "merge": "llb",
    "diff": "llb",
    "source": "llb",
    "http": "llb",
    "git": "llb",
    "BuildTrace": "progress",
    "Exporter": "exporters",
    "ProgressPrinter": "progress",
}

__all__ = [
    "BuildTrace",
    "BuildkitClient",
    "BuildkitVersion",
    "Connection",
    "Exporter",
    "ProgressPrinter",
    "State",
    "TLSConfig",
    "UsageRecord",
    "Worker",
    "connect_address",
    "connect_bridge",
    "connect_tcp",
    "connect_unix",
    "dial_process",
    "diff",
    "git",
    "http",
    "image",
    "local",
    "merge",
    "parse_go_duration",
    "probe",
    "scratch",
    "source",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
