"""envd for Python: build development and ML environment images on BuildKit.

The public surface for plugin authors is :mod:`envd_core.hookspecs` (the hooks) and the base
classes in :mod:`envd_core.builder`, :mod:`envd_core.runner` and :mod:`envd_core.contexts.store`.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envd_core.hookspecs import hookimpl  # the one name plugins import

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> object:
    # `hookimpl` (and with it pluggy) is imported when a plugin asks for it, not by every
    # `import envd_core.x`: the read-only context commands never load pluggy.
    if name == "hookimpl":
        from envd_core.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'envd_core' has no attribute {name!r}")
