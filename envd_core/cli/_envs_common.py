"""What the environment commands share: the runner of the context in force, the SSH config."""

from __future__ import annotations

from typing import Any

import click


def runner_of(app: Any) -> Any:
    """The runner of the context in force."""
    return app.contexts.runner_for(app.resolve().context)


def listed_environments(app: Any) -> list[Any]:
    """What ``envd envs ls`` lists: the runner's light lister when it declares one (the same
    call the fast path makes), else its ``list_environments``."""
    from envd_core.listing import from_environment, run_lister

    context = app.resolve().context
    runner = app.contexts.runner_for(context)
    if runner.lister is not None:
        return run_lister(runner.lister, runner.address, runner.option_values, context.name)
    return [from_environment(e) for e in runner.list_environments()]


def name_option(func: Any) -> Any:
    """``--name/-n``: the environment (default: derived from ``--path``)."""
    return click.option("--name", "-n", default=None, help="Name of the environment.")(func)


def env_name(name: str | None, path: str) -> str:
    """``--name``, else the name upstream derives from the project directory."""
    from envd_core.environments.names import environment_name

    return name or environment_name(path)


def ssh_config() -> Any:
    """The user's ``~/.ssh/config`` (``ENVD_SSH_CONFIG`` points elsewhere, e.g. in tests)."""
    import os
    from pathlib import Path

    from envd_core.environments.sshconfig import SSHConfig

    explicit = os.environ.get("ENVD_SSH_CONFIG")
    return SSHConfig(Path(explicit) if explicit else None)
