"""Universe built-ins of `build.envd`: ``base``, ``shell``, ``run``, ``git_config``, ``include``.

Every built-in takes the graph first, then upstream's arguments with upstream's names and
defaults. They only record intent in the graph; nothing here touches files or the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envd_core.envdfile.errors import BuildArgumentError
from envd_core.envdfile.graph import BuildGraph, GitConfig, RunStep

SHELLS = ("bash", "zsh", "fish", "sh")


def base(graph: BuildGraph, image: str = "", dev: bool = False) -> None:
    """Choose the base image (empty keeps ``ubuntu:22.04``) and whether it is a dev image."""
    if image:
        graph.image = image.strip()
        graph.image_set = True
    graph.dev = dev


def shell(graph: BuildGraph, name: str = "bash") -> None:
    """Set the interactive shell of the dev environment."""
    lowered = name.lower()
    if lowered not in SHELLS:
        raise BuildArgumentError(
            f"`shell` does not know the shell `{name}`; use one of: {', '.join(SHELLS)}"
        )
    graph.shell = lowered


def run(graph: BuildGraph, commands: str | list[str], mount_host: bool = False) -> None:
    """Run shell commands at build time, in order, after packages are installed."""
    if isinstance(commands, str):
        commands = [commands]
    if not commands:
        raise BuildArgumentError("`run` needs at least one command in `commands`")
    graph.run_steps.append(RunStep(list(commands), mount_host))


def git_config(graph: BuildGraph, name: str = "", email: str = "", editor: str = "") -> None:
    """Configure git (user.name, user.email, core.editor) inside the environment."""
    graph.git = GitConfig(name=name, email=email, editor=editor)


def include(graph: BuildGraph, git: str = "", ref: str = "") -> None:
    """Reached only when ``include`` is not written as ``name = include(git="URL")``.

    The evaluator rewrites that top-level form into a load of the repository (see
    :mod:`envd_core.envdfile.include`); a Python built-in cannot return a module of Starlark
    functions, so every other form is refused here with the way to write it.
    """
    raise BuildArgumentError(
        "`include` must be assigned at the top level of a file with literal strings: "
        f'`lib = include(git="{git or "URL"}"' + (f', ref="{ref}"' if ref else "") + ")`, "
        "then call `lib.<function>()`"
    )


UNIVERSE: dict[str, Callable[..., Any]] = {
    "base": base,
    "shell": shell,
    "run": run,
    "git_config": git_config,
    "include": include,
}
