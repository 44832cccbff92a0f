"""``envd debug llb``: the LLB a build file compiles to, readable (upstream's command).

It compiles exactly as ``envd build --dump-llb`` does (same context, builder capabilities and
flags), without building, and prints the definition through
:mod:`envd_core.buildkit.llb_dump`: one JSON object per op, or a Graphviz graph with ``--dot``
(``envd debug llb --dot | dot -Tsvg > llb.svg``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from envd_core.cli import aliases
from envd_core.cli.app import AliasGroup


@click.group("debug", cls=AliasGroup, aliases=aliases.DEBUG)
def debug() -> None:
    """Debugging aids for build files."""


@debug.command("llb")
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Build context directory.")
@click.option("--from", "-f", "from_spec", default=None, metavar="FILE[:FUNC]",
              help="Build file and function (default: build.envd:build).")
@click.option("--platform", default=None, metavar="OS/ARCH", help="Target platform.")
@click.option("--dot", is_flag=True, help="Print a Graphviz graph instead of JSON lines.")
@click.pass_obj
def llb(app: Any, path: str, from_spec: str | None, platform: str | None, dot: bool) -> None:
    """Print the LLB of the build file: one JSON object per op, or a dot graph."""
    from envd_core.buildkit.llb_dump import as_dot, as_json_lines
    from envd_core.cli.render import info
    from envd_core.errors import ValidationError
    from envd_core.pipeline.execute import BuildRequest, run_build

    if platform is not None and "," in platform:
        raise ValidationError("`envd debug llb` shows one platform at a time",
                              hint="give one, e.g. --platform linux/arm64")
    resolved = app.resolve()
    with tempfile.TemporaryDirectory(prefix="envd-llb-") as scratch:
        target = Path(scratch) / "definition.pb"
        request = BuildRequest(path=Path(path), from_spec=from_spec, platform=platform,
                               dump_llb=str(target), causes=app.plugins.failure_causes())
        run_build(request, builder=app.contexts.builder_for(resolved.context), runner=None,
                  extra_functions=app.plugins.build_functions(),
                  limit_defaults=app.plugins.build_file_limits(),
                  warn=lambda message: info(f"warning: {message}"))
        data = target.read_bytes()
    click.echo(as_dot(data) if dot else as_json_lines(data), nl=False)
