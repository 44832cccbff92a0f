"""The `build.envd` language: Starlark evaluation into a build graph.

The graph is :class:`~envd_core.envdfile.graph.BuildGraph`.

Importing this package is cheap; starlark-pyo3 is imported when :func:`evaluate` runs.
"""

from __future__ import annotations

from envd_core.envdfile.lang.evaluator import DEFAULT_FUNCTION, evaluate

__all__ = ["DEFAULT_FUNCTION", "evaluate"]
