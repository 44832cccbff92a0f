"""``envd bootstrap``: upstream envd's setup command, stage by stage, on the context in force.

Stages, each logged as ``[i/5] Bootstrap NAME`` as upstream does: the SSH key, the registry CA
key pair, the registry JSON config, shell completion, and BuildKit. The BuildKit stage goes
through the builder contract: a builder type that manages its daemon (``can_bootstrap``) starts
it; every other type (tcp, unix, moby-worker) is connected to and checked. Registry settings
become the context's ``registry-config`` option where the builder type has one, and are
reported as not applied where it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from envd_core.cli.render import dump_json, info

_F = TypeVar("_F", bound=Callable[..., Any])

_STAGES = ("SSH Key", "registry CA keypair", "registry json config", "autocomplete", "buildkit")


def _go_bool(name: str, help_: str, short: str | None = None) -> Callable[[_F], _F]:
    """A Go-style bool flag: ``--name`` or ``--name=true|false`` (upstream's spelling)."""
    decls = [f"-{short}", f"--{name}"] if short else [f"--{name}"]
    return click.option(*decls, type=click.BOOL, default=True, show_default=True,
                        is_flag=False, flag_value=True, metavar="[=BOOL]", help=help_)


@click.command("bootstrap")
@_go_bool("buildkit", "Bootstrap the builder's BuildKit (`--buildkit=false` skips the stage).",
          short="b")
@_go_bool("with-autocomplete", "Install shell completion for $SHELL (bash, zsh or fish).")
@click.option("-m", "--dockerhub-mirror", default=None, metavar="URL",
              help="Registry mirror for --registry (Docker Hub by default).")
@click.option("-r", "--registry", default="docker.io", show_default=True,
              help="The registry --dockerhub-mirror, --use-http and --registry-ca-keypair "
                   "configure.")
@click.option("--use-http", is_flag=True, help="Reach the mirror over plain HTTP.")
@click.option("--ca", "--registry-ca-keypair", "ca_keypair", default=None,
              metavar="ca=PATH,key=PATH,cert=PATH",
              help="CA, key and certificate for the mirror (needs --dockerhub-mirror).")
@click.option("--registry-config", default=None, metavar="JSON",
              help='Registry settings file: {"registries": [{"name", "mirror", "use_http", '
                   '"ca", "cert", "key"}]}.')
@click.option("-k", "--ssh-keypair", default=None, metavar="PUBKEY,PRIVKEY",
              help="Use this SSH key pair for environments instead of envd's own.")
@click.option("--force", is_flag=True,
              help="Recreate a daemon envd started whose image or config is stale.")
@click.option("--timeout", default=None, metavar="DURATION",
              help="How long to wait for BuildKit to answer, as a Go duration "
                   "(default: $BUILDKIT_CONNECTING_TIMEOUT, else 5s).")
@click.option("--format", "fmt", default="text", type=click.Choice(["text", "json"]),
              help="text: progress and result on stderr; json: the result on stdout.")
@click.pass_context
def bootstrap(ctx: click.Context, buildkit: bool, with_autocomplete: bool,
              dockerhub_mirror: str | None, registry: str, use_http: bool,
              ca_keypair: str | None, registry_config: str | None, ssh_keypair: str | None,
              force: bool, timeout: str | None, fmt: str) -> None:
    """Bootstrap envd: SSH key, registry settings, shell completion, and the buildkitd of the
    context in force (started if its builder manages one, else checked)."""
    from envd_core.pipeline.bootstrap_setup import RegistryFlags, registry_document

    app = ctx.obj
    wait = _timeout(timeout)
    keys = _ssh_flag(ssh_keypair)
    flags = RegistryFlags(mirror=dockerhub_mirror, registry=registry, use_http=use_http,
                          ca_keypair=ca_keypair, config=registry_config)
    config_path, document = registry_document(flags)  # all flags checked before any change
    if (config_path or document) and not buildkit:
        from envd_core.errors import UsageError

        raise UsageError("registry settings apply to BuildKit, and --buildkit=false skips it",
                         hint="drop --buildkit=false, or the registry flags")
    report: dict[str, Any] = {}
    stage = _Stages()

    stage("SSH Key")
    report["ssh_key"] = str(_ssh_stage(keys))
    stage("registry CA keypair")
    if ca_keypair:
        info(f"CA key pair for {registry} checked")
    stage("registry json config")
    if config_path:
        info(f"registry config {config_path} checked")
    stage("autocomplete")
    report["completion"] = _completion_stage(ctx) if with_autocomplete else None
    stage("buildkit")
    if not buildkit:
        report["buildkit"] = None
        if fmt == "json":
            click.echo(dump_json({"context": app.resolve().context.name, **report}))
        return
    _buildkit_stage(app, config_path, document, report, wait=wait, force=force, fmt=fmt)


class _Stages:
    def __init__(self) -> None:
        self.index = 0

    def __call__(self, name: str) -> None:
        self.index += 1
        info(f"[{self.index}/{len(_STAGES)}] Bootstrap {name}")


def _timeout(value: str | None) -> float:
    from envd_core.buildkit.transport import connect_timeout, parse_go_duration
    from envd_core.errors import ValidationError

    wait = None
    if value is not None:
        try:
            wait = parse_go_duration(value)
        except ValidationError:
            raise ValidationError(
                f"invalid --timeout `{value}`: use a Go duration such as `5s` or `1m`"
            ) from None
        if wait <= 0:
            raise ValidationError(f"invalid --timeout `{value}`: it must be positive")
    return connect_timeout(wait)


def _ssh_flag(value: str | None) -> tuple[str, str] | None:
    from envd_core.errors import ValidationError

    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValidationError(f"Invalid ssh-keypair flag `{value}`",
                              hint="give the public and the private key: -k PUBKEY,PRIVKEY")
    return parts[0], parts[1]


def _ssh_stage(keys: tuple[str, str] | None) -> Any:
    from envd_core.contexts.store import config_dir
    from envd_core.environments.keys import ensure_key_pair
    from envd_core.pipeline.bootstrap_setup import install_ssh_keypair

    if keys is None:
        key = ensure_key_pair(config_dir())
    else:
        key = install_ssh_keypair(config_dir(), keys[0], keys[1], report=info)
    info(f"SSH key: {key}")
    return key


def _completion_stage(ctx: click.Context) -> str | None:
    from envd_core.errors import EnvdError
    from envd_core.pipeline.bootstrap_setup import install_completion

    try:
        shell, path = install_completion(ctx.find_root().command)
    except (EnvdError, OSError) as exc:  # upstream: only a warning
        info(f"warning: shell completion not installed: {exc}")
        return None
    info(f"{shell} completion written to {path}")
    return str(path)


def _buildkit_stage(app: Any, config_path: str | None, document: dict[str, Any] | None,
                    report: dict[str, Any], *, wait: float, force: bool, fmt: str) -> None:
    from envd_core.pipeline.bootstrap import apply_registry_settings, bootstrap_builder

    resolved = app.resolve()
    context = resolved.context
    if config_path or document:
        applied = apply_registry_settings(app.contexts, context, path=config_path,
                                          document=document)
        report["registries"] = applied.to_json()
        info(applied.message)
        context = applied.context
    builder = app.contexts.builder_for(context)
    info(f"Context `{context.name}` (from {resolved.reason}): builder {builder.url}")
    outcome = bootstrap_builder(builder, timeout=wait, force=force, report=info)
    if fmt == "json":
        click.echo(dump_json({"context": context.name, **report, **outcome.to_json()}))
        return
    status = outcome.status
    if outcome.managed:
        info(f"{outcome.change.action}: {outcome.change.detail}".rstrip(": "))
    platforms = ", ".join(status.platforms) or "no platforms"
    info(f"{status.version or 'unknown version'}, {status.workers} worker(s): {platforms}")
    info(f"The buildkit is running at {builder.url}")
