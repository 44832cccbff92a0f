"""Run a build: build.envd → graph → LLB → the context's builder → the requested output.

This is the library behind ``envd build``; the CLI only parses flags and prints the result.
It knows contexts only through the :class:`Builder` and :class:`Runner` objects it is handed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from envd_core import timings
from envd_core.builder import Builder, silent
from envd_core.errors import ValidationError
from envd_core.pipeline.causes import BUILTIN_CAUSES, Cause
from envd_core.pipeline.defcache import CachedBuild
from envd_core.pipeline.defcache import DefinitionCache as _DefinitionCache
from envd_core.pipeline.early import EarlyConnection, early_connect_enabled

# explain_failure and link_lost moved to pipeline/failures.py; re-exported (`as`) for callers
from envd_core.pipeline.failures import explain_failure as explain_failure
from envd_core.pipeline.failures import explaining, push_after_export
from envd_core.pipeline.failures import link_lost as link_lost

if TYPE_CHECKING:  # a pushing build never needs the runner classes (environment records)
    from envd_core.runner import Runner

CA_SECRET_ID = "envd-ca-bundle"


@attrs.define
class BuildRequest:
    """What the user asked for (``envd build`` flags, already split but not yet validated)."""

    path: Path = attrs.field(factory=lambda: Path("."))
    from_spec: str | None = None
    tag: str | None = None
    output: str | None = None
    export_cache: tuple[str, ...] = ()
    import_cache: tuple[str, ...] = ()
    platform: str | None = None
    no_cache: bool = False
    progress: str = "auto"
    use_proxy: bool = False
    ca_bundle: str | None = None
    dump_llb: str | None = None
    #: Start the builder's daemon if it manages one and it is not running (upstream does).
    auto_bootstrap: bool = True
    #: How many of a failed step's last log lines the report shows (TTY view, JSON).
    log_lines: int = 10
    #: The failure causes to recognise: plugins' rows first, then the built-in table.
    causes: tuple[Cause, ...] = BUILTIN_CAUSES
    #: Keep the image the last solve of this very definition made, when it provably still
    #: stands, instead of solving again (``envd up``; the rules: :mod:`envd_core.pipeline.reuse`).
    reuse: bool = False


@attrs.define
class BuildResult:
    """Where the image went, for the CLI to tell the user."""

    tag: str
    output_type: str
    destination: str
    pushed: bool = False
    digest: str | None = None
    exporter_response: dict[str, str] = attrs.field(factory=dict)
    #: The image's labels (``envd up`` hands them to a runner that cannot look them up).
    labels: dict[str, str] = attrs.field(factory=dict)
    #: No solve: the image of the last solve of the same definition still stands (``up``).
    reused: bool = False


def _proxy_env() -> dict[str, str]:
    return {k: v for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") if (v := os.environ.get(k))}


def resolve_ca_bundle(request: BuildRequest, builder: Builder) -> str | None:
    """The extra CA bundle: ``--ca-bundle``, else ``ENVD_CA_BUNDLE``, else the context option."""
    chosen = (
        request.ca_bundle
        or os.environ.get("ENVD_CA_BUNDLE")
        or builder.option_values.get("ca-bundle")
    )
    if not chosen:
        return None
    path = os.path.abspath(os.path.expanduser(chosen))
    if not os.path.isfile(path):
        raise ValidationError(f"CA bundle `{path}` does not exist", hint="fix --ca-bundle")
    return path


def plan_exporter(spec: Any, *, tag: str, builder: Builder) -> tuple[str, dict[str, str]]:
    """Map ``--output`` (or its absence) to the exporter this builder can run."""
    supported = builder.exporters
    if spec is None:
        if "moby" in supported:
            return "moby", {"name": tag}
        return "docker", {"name": tag}
    kind = spec.type
    attrs_ = dict(spec.attrs)
    if kind == "image" and "image" not in supported and "moby" in supported:
        # dockerd's BuildKit has no `image` exporter: export into dockerd, push with its API.
        attrs_.setdefault("name", tag)
        return "moby", {k: v for k, v in attrs_.items() if k != "push"}
    if kind not in supported:
        raise ValidationError(
            f"builder `{builder.name}` cannot export `type={kind}` "
            f"(it supports: {', '.join(sorted(supported))})"
        )
    if kind in ("image", "moby", "docker", "oci"):
        attrs_.setdefault("name", tag)
    return kind, attrs_


def _plan_output(spec: Any, *, tag: str, builder: Builder) -> tuple[str, dict[str, str], bool]:
    """The exporter, its attributes and whether to push after a ``moby`` export; an output this
    builder cannot deliver is a ValidationError before anything is built or contacted."""
    kind, exporter_attrs = plan_exporter(spec, tag=tag, builder=builder)
    push_after = spec is not None and spec.type == "image" and kind == "moby" and _truthy(
        spec.attrs.get("push")
    )
    if push_after and not builder.can_push:
        raise ValidationError(
            f"builder `{builder.name}` exports into its daemon's image store and cannot push "
            "from there",
            hint="push the image yourself, or build on a context whose builder can push",
        )
    return kind, exporter_attrs, push_after


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes")


@contextlib.contextmanager
def _export_target(
    kind: str, spec: Any, runner: Runner | None
) -> Iterator[tuple[Any, Path | None]]:
    """The session's export target and, for a default docker export, the tarball to load."""
    from envd_core.buildkit.session import ExportTarget

    if kind == "local":
        yield ExportTarget.directory(spec.dest), None
    elif kind in ("tar", "oci", "docker") and spec is not None:
        yield ExportTarget.file(spec.dest if spec.dest_kind == "file" else "-"), None
    elif kind == "docker":
        if runner is None or not runner.can_load_images:
            raise ValidationError(
                "this context's runner cannot load images; give --output type=image,...,push=true "
                "or a file output"
            )
        import tempfile

        with tempfile.TemporaryDirectory(prefix="envd-export-") as tmp:
            tarball = Path(tmp) / "image.tar"
            yield ExportTarget.file(tarball), tarball
    else:
        yield None, None


def run_build(
    request: BuildRequest,
    *,
    builder: Builder,
    runner: Runner | None,
    extra_functions: Mapping[str, Callable[..., Any]] | None = None,
    limit_defaults: Mapping[str, str] | None = None,
    progress_stream: Any = None,
    warn: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> list[BuildResult]:
    """Evaluate, compile and solve ``request`` on ``builder``; deliver the output.

    One result per platform: with several (``--platform linux/amd64,linux/386``) they are built
    one after another and each tag gets a ``-os-arch`` suffix, as upstream envd does.
    ``warn`` receives what the compiler left out; ``announce`` is called with the platform once
    the build file evaluated and compiled, right before the builder is contacted. Before the
    first solve, a builder that manages its daemon bootstraps it if it is missing
    (:func:`envd_core.pipeline.bootstrap.ensure_running`); ``report`` receives those lines.
    ``limit_defaults`` are the distribution's build-file evaluation limits (docs/limits.md).
    """
    timings.start()
    try:
        return _run_build(request, builder=builder, runner=runner,
                          extra_functions=extra_functions, limit_defaults=limit_defaults,
                          progress_stream=progress_stream, warn=warn, announce=announce,
                          report=report)
    finally:
        timings.dump()


def _run_build(
    request: BuildRequest,
    *,
    builder: Builder,
    runner: Runner | None,
    extra_functions: Mapping[str, Callable[..., Any]] | None,
    limit_defaults: Mapping[str, str] | None,
    progress_stream: Any,
    warn: Callable[[str], None] | None,
    announce: Callable[[str], None] | None,
    report: Callable[[str], None] | None,
) -> list[BuildResult]:
    from envd_core.envdfile import load_build_recorded
    from envd_core.envdfile.buildflags import (
        default_tag,
        normalize_tag,
        parse_export_cache,
        parse_import_cache,
        parse_output,
        parse_platforms,
    )
    from envd_core.paths import check_component_lengths, is_dir

    check_component_lengths(request.path, "--path")
    context_dir = request.path.resolve()
    if not is_dir(context_dir):
        raise ValidationError(f"build context `{request.path}` is not a directory")
    spec = parse_output(request.output)
    check_destinations(spec, request.dump_llb)
    tag = normalize_tag(request.tag or default_tag(context_dir))
    platforms = parse_platforms(request.platform)
    multi = len(platforms) > 1
    if multi and (request.dump_llb or (spec is not None and spec.dest_kind is not None)):
        raise ValidationError(
            "several --platform values write several results: not into one file, directory "
            "or --dump-llb; build one platform at a time"
        )
    exports = parse_export_cache(list(request.export_cache))
    imports = parse_import_cache(list(request.import_cache))
    ca_bundle = resolve_ca_bundle(request, builder)

    if request.dump_llb is None:
        _plan_output(spec, tag=tag, builder=builder)  # refuse a bad --output before connecting
    timings.mark("flags")
    builder.project = str(context_dir)  # routing key of builders with several daemons, set
    # before the early connection so it lands on the project's daemon
    want_early = (request.dump_llb is None and early_connect_enabled()
                  and (not builder.can_bootstrap or builder.early_bootstrap_check))
    # `up` (reuse) connects early only on a definition cache miss: on a hit it may keep its
    # last image without any connection (pipeline/reuse.py), and has no evaluation to hide
    # a connection behind anyway
    early = EarlyConnection(builder) if want_early and not request.reuse else None
    try:
        cache = _DefinitionCache.open(request, context_dir=context_dir, builder=builder,
                                      extra_functions=extra_functions or {},
                                      limit_defaults=limit_defaults, platforms=platforms)
        if want_early and early is None and (cache is None or cache.hit is None):
            early = EarlyConnection(builder)
        graph: Any = None
        if cache is None or cache.hit is None:
            if early is not None:  # no gRPC threads while the evaluation forks (early.py)
                early.allow_connect(after_evaluation_forks=True)
            try:
                graph, reads = load_build_recorded(context_dir, request.from_spec,
                                                   extra_functions,
                                                   limit_defaults=limit_defaults,
                                                   record=cache is not None)
            finally:
                if early is not None:
                    early.allow_connect()
            if cache is not None:
                cache.evaluated(graph, reads)
            timings.mark("starlark")
        elif early is not None:
            early.allow_connect()  # a cached definition: nothing forks
        return _build_all(graph, request, context_dir=context_dir, spec=spec, tag=tag,
                          platforms=platforms, multi=multi, builder=builder, runner=runner,
                          ca_bundle=ca_bundle, imports=imports, exports=exports,
                          progress_stream=progress_stream, warn=warn, announce=announce,
                          report=report, early=early, cache=cache)
    finally:
        if early is not None:
            early.discard()


def _build_all(
    graph: Any, request: BuildRequest, *, context_dir: Path, spec: Any, tag: str,
    platforms: list[str], multi: bool, builder: Builder, runner: Runner | None,
    ca_bundle: str | None, imports: list[Any], exports: list[Any], progress_stream: Any,
    warn: Callable[[str], None] | None, announce: Callable[[str], None] | None,
    report: Callable[[str], None] | None, early: EarlyConnection | None,
    cache: _DefinitionCache | None = None,
) -> list[BuildResult]:
    from envd_core.envdfile.buildflags import platform_tag

    results = []
    ready = False  # ensure_running runs once per build, before the first platform's solve

    def prepare() -> None:
        nonlocal ready
        if not ready:
            from envd_core.pipeline.bootstrap import ensure_running

            ensure_running(builder, auto_bootstrap=request.auto_bootstrap,
                           report=report or silent)
            ready = True
            timings.mark("bootstrap check")

    for platform in platforms:
        results.append(_build_one(
            graph, request, context_dir=context_dir, platform=platform,
            tag=platform_tag(tag, platform, multi=multi),
            spec=spec, builder=builder, runner=runner, ca_bundle=ca_bundle, imports=imports,
            exports=exports, progress_stream=progress_stream, multi=multi,
            warn=warn if platform == platforms[0] else None, announce=announce, prepare=prepare,
            early=early if platform == platforms[0] else None, cache=cache,
        ))
    return results


def _public_key() -> str:
    """The public half of the envd key pair (made on first use), for dev images' sshd."""
    from envd_core.contexts.store import config_dir
    from envd_core.environments.keys import ensure_key_pair

    key = ensure_key_pair(config_dir())
    return Path(str(key) + ".pub").read_text().strip()


def check_destinations(spec: Any, dump_llb: str | None) -> None:
    """``--dump-llb`` and ``--output dest=`` can be written: checked before the build file is
    evaluated, so a typo in a path does not cost a whole solve."""
    from envd_core.paths import check_output_dir, check_output_file

    if dump_llb and dump_llb != "-":
        check_output_file(dump_llb, "--dump-llb")
    if spec is not None and spec.dest_kind == "file":
        check_output_file(spec.dest, "--output dest")
    elif spec is not None and spec.dest_kind == "dir":
        check_output_dir(spec.dest, "--output dest")


def _build_one(
    graph: Any, request: BuildRequest, *, context_dir: Path, platform: str, tag: str, spec: Any,
    builder: Builder,
    runner: Runner | None, ca_bundle: str | None, imports: list[Any], exports: list[Any],
    progress_stream: Any, multi: bool, warn: Callable[[str], None] | None,
    announce: Callable[[str], None] | None, prepare: Callable[[], None],
    early: EarlyConnection | None = None, cache: _DefinitionCache | None = None,
) -> BuildResult:
    from envd_core.envdfile.buildflags import platform_tag

    compiled: Any = cache.hit[platform] if cache is not None and cache.hit else None
    if compiled is None:
        from envd_core.envdfile.compile import CompileOptions, compile_graph

        compiled = compile_graph(
            graph,
            options=CompileOptions(
                context_dir=context_dir,
                tag=tag,
                platform=platform,
                ca_bundle_secret=ca_bundle is not None,
                merge_op=builder.supports_merge_op,
                no_cache=request.no_cache,
                proxy_env=_proxy_env() if request.use_proxy else {},
                authorized_key=_public_key() if graph.dev else "",
            ),
        )
        if cache is not None:
            cache.compiled(platform, compiled)
        timings.mark("llb")
    for warning in compiled.warnings:
        if warn is not None:
            warn(warning)
    if request.dump_llb:
        data = (compiled.definition_bytes if isinstance(compiled, CachedBuild)
                else compiled.definition.SerializeToString(deterministic=True))
        if request.dump_llb == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            from envd_core.paths import write_file

            write_file(request.dump_llb, data, "--dump-llb")
        return BuildResult(tag=tag, output_type="llb", destination=request.dump_llb)

    kind, exporter_attrs, push_after = _plan_output(spec, tag=tag, builder=builder)
    if multi and spec is not None and "name" in spec.attrs:
        # several platforms: each result gets its own -os-arch name, as the tag does
        exporter_attrs["name"] = platform_tag(spec.attrs["name"], platform, multi=True)
    if announce is not None:
        announce(platform)
    prepare()
    reuse = None
    if request.reuse:
        from envd_core.pipeline.reuse import plan

        reuse = plan(request=request, compiled=compiled, kind=kind, push_after=push_after,
                     exporter_attrs=exporter_attrs, builder=builder, runner=runner)
        if reuse is not None and reuse.attempt():
            timings.mark("reuse check")
            labels = (compiled.image_config.get("config") or {}).get("Labels") or {}
            name = exporter_attrs.get("name", tag)
            return BuildResult(tag=tag, output_type=kind,
                               destination=f"dockerd's image store as {name} (unchanged)",
                               labels={str(k): str(v) for k, v in labels.items()}, reused=True)
        if reuse is not None:
            reuse.before_solve()
        timings.mark("reuse check")
    config_json = json.dumps(compiled.image_config, separators=(",", ":"))
    if builder.exporter_applies_config and kind in ("image", "docker", "oci", "moby"):
        exporter_attrs["containerimage.config"] = config_json
    result = _solve(
        compiled, builder=builder, runner=runner, spec=spec, kind=kind,
        exporter_attrs=exporter_attrs, tag=tag, ca_bundle=ca_bundle, imports=imports,
        exports=exports, push_after=push_after, request=request,
        progress_stream=progress_stream, early=early,
    )
    if reuse is not None:
        reuse.after_solve()
    return result


def _solve(
    compiled: Any, *, builder: Builder, runner: Runner | None, spec: Any, kind: str,
    exporter_attrs: dict[str, str], tag: str, ca_bundle: str | None, imports: list[Any],
    exports: list[Any], push_after: bool, request: BuildRequest, progress_stream: Any,
    early: EarlyConnection | None = None,
) -> BuildResult:
    from envd_core.buildkit.client import BuildkitClient
    from envd_core.buildkit.exporters import Exporter
    from envd_core.buildkit.progress import ProgressPrinter
    from envd_core.buildkit.session import AuthProvider, LocalDir, SecretSource, Session
    from envd_core.buildkit.transport import connect_timeout

    secrets = {CA_SECRET_ID: SecretSource.from_file(ca_bundle)} if ca_bundle else {}
    local_dirs = {name: LocalDir(path) for name, path in compiled.local_dirs.items()}
    labels = (compiled.image_config.get("config") or {}).get("Labels") or {}
    result = BuildResult(tag=tag, output_type=kind, destination="",
                         labels={str(k): str(v) for k, v in labels.items()})
    timings.mark("imports (build)")
    connection = early.take() if early is not None else None
    if connection is None:  # no early connection, or it left a bootstrap to the build
        connection = builder.connect(timeout=connect_timeout())
    timings.mark("connect")
    try:
        with _export_target(kind, spec, runner) as (target, tarball):
            session = Session(
                shared_key=compiled.shared_key,
                local_dirs=local_dirs,
                secrets=secrets,
                auth=AuthProvider.from_docker_config(),
                export=target,
            )
            target = exporter_attrs.get("name")
            printer = ProgressPrinter(request.progress, progress_stream,
                                      log_lines=request.log_lines)
            with printer, explaining(session, printer, request.causes, target):
                response = BuildkitClient(connection).solve(
                    compiled.definition,
                    exporters=[Exporter(kind, exporter_attrs)],
                    session=session,
                    cache_exports=[Exporter(c.type, c.attrs) for c in exports],
                    cache_imports=[Exporter(c.type, c.attrs) for c in imports],
                    entitlements=list(compiled.entitlements),
                    on_status=printer,
                    log_lines=request.log_lines,
                )
            result.exporter_response = response
            result.digest = response.get("containerimage.digest")
            if tarball is not None and runner is not None:
                with open(tarball, "rb") as handle:
                    runner.load_image(handle)
                result.destination = f"runner `{runner.name}` (loaded as {tag})"
                timings.mark("load into runner")
    finally:
        connection.close()
        timings.mark("disconnect")
    name = exporter_attrs.get("name", tag)
    if kind == "moby":
        if not builder.exporter_applies_config:
            builder.apply_image_config(name, compiled.image_config)
            timings.mark("image config")
        result.destination = f"dockerd's image store as {name}"
        if push_after:
            pushed = push_after_export(builder, name, printer, request.causes)
            result.digest = pushed or result.digest
            result.pushed = True
            result.destination = name
            timings.mark("push")
    elif kind == "image":
        result.pushed = _truthy(exporter_attrs.get("push"))
        result.destination = name if result.pushed else f"the builder's image store as {name}"
    elif kind in ("tar", "oci", "docker") and spec is not None:
        result.destination = spec.dest if spec.dest_kind == "file" else "stdout"
    elif kind == "local":
        result.destination = str(spec.dest)
    return result
