"""``envd sync``: copy the project into its environment over SSH (once, or ``--watch``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from envd_core.cli._envs_common import env_name, name_option
from envd_core.cli.render import info


def _config_path() -> Path | None:
    from envd_core.cli._envs_common import ssh_config
    from envd_core.environments.sshconfig import default_path

    path: Path = ssh_config().path
    return None if path == default_path() else path


def sync_once(project: Path | None, alias: str) -> dict[str, float]:
    """Copy ``project`` into ``<alias>.envd``'s working directory (``up --sync``)."""
    from envd_core.environments.names import project_dir_in_environment, ssh_host
    from envd_core.environments.sync import push_project

    if project is None:
        return {}
    remote = project_dir_in_environment(project)
    state = push_project(project, host=ssh_host(alias), remote_dir=remote,
                         ssh_config=_config_path())
    info(f"Synced {len(state)} files of {project} to {ssh_host(alias)}:{remote}")
    return state


@click.command("sync")
@name_option
@click.option("--path", "-p", default=".", show_default=True, type=click.Path(),
              help="Project directory.")
@click.option("--watch", "-w", is_flag=True,
              help="Keep sending changed files (every second) until interrupted.")
@click.pass_obj
def sync(app: Any, /, name: str | None, path: str, watch: bool) -> None:
    """Copy the project into its environment over SSH (for runners without mounts)."""
    from envd_core.environments.names import project_dir_in_environment, ssh_host
    from envd_core.environments.sync import watch_project

    project = Path(path).resolve()
    if not project.is_dir():
        raise click.BadParameter(f"`{path}` is not a directory", param_hint="--path")
    alias = env_name(name, path)
    state = sync_once(project, alias)
    if watch:
        info("Watching for changes (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
            watch_project(project, state, host=ssh_host(alias),
                          remote_dir=project_dir_in_environment(project),
                          ssh_config=_config_path(),
                          report=lambda n: info(f"Synced {n} changed files"))
