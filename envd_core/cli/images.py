"""``envd images ls|describe|prune|remove``: the envd images in the runner's store."""

from __future__ import annotations

from typing import Any

import click

from envd_core.cli import aliases
from envd_core.cli._envs_common import runner_of
from envd_core.cli.app import AliasGroup
from envd_core.cli.render import dump_json, format_option, info, table


def _image_runner(app: Any) -> Any:
    runner = runner_of(app)
    if not runner.can_manage_images:
        runner.images()  # raises the runner's own one-line "cannot list images"
    return runner


@click.group("images", cls=AliasGroup, aliases=aliases.IMAGES)
def images() -> None:
    """Manage envd images."""


@images.command("ls")
@format_option
@click.pass_obj
def ls(app: Any, fmt: str) -> None:
    """List the images envd built that are in the runner's store."""
    from envd_core.environments.operations import envd_images, image_row

    rows = [image_row(i) for i in envd_images(_image_runner(app))]
    if fmt == "json":
        click.echo(dump_json(rows))
        return
    click.echo(table(
        ["name", "context", "gpu", "cuda", "cudnn", "image id", "created", "size"],
        [[r["name"], r.get("endpoint", "<none>"), str(r["gpu"]).lower(),
          r.get("cuda", "<none>"), r.get("cudnn", "<none>"), r["image_id"], r["created"],
          r["size"]] for r in rows],
    ))


def _find(runner: Any, ref: str) -> Any:
    from envd_core.environments.operations import find_image
    from envd_core.errors import RunnerError

    image = find_image(runner, ref)
    if image is None:
        raise RunnerError(f"image `{ref}` not found in runner `{runner.name}`",
                          hint="list images with `envd images ls`")
    return image


@images.command("describe")
@click.argument("positional", required=False, metavar="[IMAGE]")
@click.option("--image", "-i", default=None, help="The image.")
@format_option
@click.pass_obj
def describe(app: Any, positional: str | None, image: str | None, fmt: str) -> None:
    """Show an image's dependencies and ports."""
    from envd_core.environments.names import LABEL_PORTS, label_json
    from envd_core.environments.operations import dependencies

    ref = positional or image
    if not ref:
        raise click.UsageError("give the image: envd images describe --image NAME[:TAG]")
    found = _find(_image_runner(app), ref)
    deps = dependencies(found.labels)
    ports = [{"name": str(p.get("name", "")), "container_port": str(p.get("port", "")),
              "protocol": "tcp"}
             for p in label_json(found.labels, LABEL_PORTS) or [] if isinstance(p, dict)]
    if fmt == "json":
        click.echo(dump_json({k: v for k, v in {"dependencies": deps, "ports": ports}.items()
                              if v}))
        return
    if deps:
        click.echo(table(["dependencies", "type"], [[d["name"], d["type"]] for d in deps]))
    if ports:
        click.echo(table(["name", "container port", "protocol"],
                         [[p["name"], p["container_port"], p["protocol"]] for p in ports]))


@images.command("remove")
@click.argument("positional", required=False, metavar="[IMAGE]")
@click.option("--image", "-i", default=None, help="The image name.")
@click.option("--tag", "-t", default="dev", show_default=True,
              help="The tag, when the image name has none.")
@click.option("--force", is_flag=True, help="Remove it even if an environment uses it.")
@click.pass_obj
def remove(app: Any, positional: str | None, image: str | None, tag: str, force: bool) -> None:
    """Remove an envd image from the runner's store."""
    from envd_core.errors import RunnerError

    name = positional or image
    if not name:
        raise click.UsageError("give the image: envd images remove --image NAME [--tag TAG]")
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        name = f"{name}:{tag}"
    runner = _image_runner(app)
    found = _find(runner, name)
    users = [e.name for e in runner.list_environments()
             if e.image == name or e.image in found.tags]
    if users and not force:
        raise RunnerError(f"image `{name}` is used by environment `{users[0]}`",
                          hint=f"remove it first (envd down --name {users[0]}) or use --force")
    runner.remove_image(name, force=force)
    info(f"Image {name} is removed")


@images.command("prune")
@click.option("--all", "-a", "all_", is_flag=True,
              help="Also remove tagged envd images no environment uses.")
@click.pass_obj
def prune(app: Any, all_: bool) -> None:
    """Remove envd images no environment uses (untagged ones; with --all, every one)."""
    from envd_core.environments.operations import envd_images

    runner = _image_runner(app)
    used = {e.image for e in runner.list_environments()}
    removed = 0
    for found in envd_images(runner):
        if used.intersection(found.tags) or found.id in used:
            continue
        if found.tags and not all_:
            continue
        for ref in found.tags or (found.id,):
            runner.remove_image(ref)
        removed += 1
    info(f"Removed {removed} image{'s' if removed != 1 else ''}")
