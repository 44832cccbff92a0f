"""``envd build``: build the environment described by build.envd on the context's builder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from envd_core.cli.render import dump_json, info

if TYPE_CHECKING:
    from envd_core.cli import App
    from envd_core.pipeline.execute import BuildResult


@click.command("build")
@click.option("--tag", "-t", default=None, help="Image name and tag (default: <dir>:dev).")
@click.option("--from", "-f", "from_spec", default=None, metavar="FILE[:FUNC]",
              help="Build file and function (default: build.envd:build).")
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Build context directory.")
@click.option("--output", "-o", default=None, metavar="SPEC",
              help="type=image|docker|oci|tar|local|moby[,name=…][,push=true][,dest=…]")
@click.option("--export-cache", "--ec", "export_cache", multiple=True, metavar="SPEC",
              help="Export build cache, e.g. type=registry,ref=host/cache:tag.")
@click.option("--import-cache", "--ic", "import_cache", multiple=True, metavar="SPEC",
              help="Import build cache, e.g. type=registry,ref=host/cache:tag.")
@click.option("--platform", default=None, metavar="OS/ARCH", help="Target platform.")
@click.option("--force", "--no-cache", "no_cache", is_flag=True,
              help="Rebuild every step, ignoring the cache.")
@click.option("--progress", default=None, type=click.Choice(["auto", "tty", "plain", "json"]),
              help="Progress output (default: auto; BUILDKIT_PROGRESS overrides auto).")
@click.option("--use-proxy", "--proxy", "use_proxy", is_flag=True,
              help="Pass HTTP_PROXY/HTTPS_PROXY/NO_PROXY to build steps.")
@click.option("--ca-bundle", default=None, type=click.Path(),
              help="Extra CA bundle mounted into networked steps (never stored in the image).")
@click.option("--dump-llb", default=None, metavar="FILE|-",
              help="Write the LLB definition (for `buildctl build`) instead of building.")
@click.option("--no-bootstrap", is_flag=True,
              help="Fail instead of starting the builder's daemon when it is not running.")
@click.option("--log-lines", default=10, show_default=True, type=click.IntRange(1, 200),
              help="How many of a failed step's last log lines the report shows.")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]),
              help="How to report the result on stdout.")
@click.pass_obj
def build(app: App, tag: str | None, from_spec: str | None, path: str, output: str | None,
          export_cache: tuple[str, ...], import_cache: tuple[str, ...], platform: str | None,
          no_cache: bool, progress: str | None, use_proxy: bool, ca_bundle: str | None,
          dump_llb: str | None, no_bootstrap: bool, log_lines: int, fmt: str) -> None:
    """Build an environment image from build.envd."""
    from envd_core.errors import BuildError
    from envd_core.pipeline.execute import BuildRequest, run_build

    mode = progress or os.environ.get("BUILDKIT_PROGRESS") or ("plain" if app.debug else "auto")
    request = BuildRequest(
        path=Path(path), from_spec=from_spec, tag=tag, output=output,
        export_cache=export_cache, import_cache=import_cache, platform=platform,
        no_cache=no_cache, progress=mode, use_proxy=use_proxy, ca_bundle=ca_bundle,
        dump_llb=dump_llb, auto_bootstrap=not no_bootstrap, log_lines=log_lines,
        causes=app.plugins.failure_causes(),
    )
    resolved = app.resolve()
    builder = app.contexts.builder_for(resolved.context)
    runner = None
    if output is None and dump_llb is None:
        runner = app.contexts.runner_for(resolved.context)

    def announce(platform: str) -> None:
        info(f"Building {path} for {platform} on {builder.url} (context "
             f"`{resolved.context.name}`, from {resolved.reason})")

    try:
        results = run_build(
            request, builder=builder, runner=runner,
            extra_functions=app.plugins.build_functions(),
            limit_defaults=app.plugins.build_file_limits(),
            warn=lambda message: info(f"warning: {message}"),
            announce=announce,
            report=info,
        )
    except BuildError as exc:
        if fmt == "json":  # CI reads the failure on stdout; stderr still gets the envd: line
            click.echo(dump_json({"error": exc.to_dict(), "context": resolved.context.name}))
        raise
    if fmt == "json":
        rows = [{
            "tag": r.tag, "output": r.output_type, "destination": r.destination,
            "pushed": r.pushed, "digest": r.digest, "context": resolved.context.name,
        } for r in results]
        click.echo(dump_json(rows[0] if len(rows) == 1 else rows))
        return
    for result in results:
        _report(result, dump_llb)


def _report(result: BuildResult, dump_llb: str | None) -> None:
    if result.output_type == "llb":
        if dump_llb != "-":
            info(
                f"LLB definition written to {dump_llb} "
                f"(build it with `buildctl build < {dump_llb}`)"
            )
        return
    if result.pushed:
        info(f"Pushed {result.destination}" + (f" ({result.digest})" if result.digest else ""))
        info(
            f"Run it: docker pull {result.destination} "
            f"&& docker run --rm -it {result.destination}"
        )
    else:
        info(f"Built {result.tag}: {result.destination}")
        if result.output_type in ("moby", "docker"):
            info(f"Run it: docker run --rm -it {result.tag}")
