"""From `build.envd` to BuildKit: evaluation, the build graph, LLB compilation, build flags.

Layout (data flows one way):

- :mod:`envd_core.envdfile.lang` — Starlark evaluation of build files into a graph
- :mod:`envd_core.envdfile.graph` — the graph (attrs IR) with a stable digest
- :mod:`envd_core.envdfile.buildflags` — ``--output``/cache/``--from``/``--tag``/``--platform``
- :mod:`envd_core.envdfile.image_config` — OCI image config and ``ai.tensorchord.envd.*`` labels
- :mod:`envd_core.envdfile.compile` — graph → LLB definition + image config

Importing this package is cheap: starlark and protobuf load only when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envd_core.envdfile.graph import BuildGraph
    from envd_core.envdfile.lang.reads import Reads


def load_build(
    path: str | Path,
    from_spec: str | None = None,
    extra_functions: Mapping[str, Callable[..., Any]] | None = None,
    *,
    user_config: str | Path | None = None,
    cwd: str | Path | None = None,
    check_buildable: bool = True,
    limit_defaults: Mapping[str, str] | None = None,
) -> BuildGraph:
    """Evaluate the build file of build context ``path`` (``--path``) and return its graph.

    ``from_spec`` is ``--from`` (``file[:func]``, default ``build.envd:build``). The file is
    ``<path>/<file>`` when that exists, else ``<file>`` relative to ``cwd`` (upstream's rule).
    ``extra_functions`` are vendor built-ins (see :func:`envd_core.envdfile.lang.evaluate`);
    ``user_config`` is evaluated first (upstream's ``~/.config/envd/config.envd``).
    ``check_buildable=False`` accepts calls this envd cannot build (graph-only use).
    ``limit_defaults`` are a distribution's evaluation limits (``ENVD_BUILD_LIMITS`` wins).
    """
    graph, _ = load_build_recorded(
        path, from_spec, extra_functions, user_config=user_config, cwd=cwd,
        check_buildable=check_buildable, limit_defaults=limit_defaults, record=False,
    )
    return graph


def load_build_recorded(
    path: str | Path,
    from_spec: str | None = None,
    extra_functions: Mapping[str, Callable[..., Any]] | None = None,
    *,
    user_config: str | Path | None = None,
    cwd: str | Path | None = None,
    check_buildable: bool = True,
    limit_defaults: Mapping[str, str] | None = None,
    record: bool = True,
) -> tuple[BuildGraph, Reads | None]:
    """:func:`load_build`, also returning what the evaluation read (``None`` when it was not
    recorded; see :func:`envd_core.envdfile.lang.evaluator.evaluate_recorded`)."""
    from envd_core.envdfile.buildflags import locate_build_file, parse_from
    from envd_core.envdfile.lang.evaluator import evaluate_recorded
    from envd_core.envdfile.lang.limits import limits_in_force

    spec = parse_from(from_spec)
    context = Path(path)
    file = locate_build_file(context, spec, Path(cwd) if cwd else None)
    return evaluate_recorded(
        file,
        context_dir=context,
        function=spec.function,
        extra_functions=extra_functions,
        user_config=Path(user_config) if user_config else None,
        check_buildable=check_buildable,
        limits=limits_in_force(limit_defaults),
        record=record,
    )


__all__ = ["load_build", "load_build_recorded"]
