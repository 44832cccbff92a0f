"""Runner type ``docker``: environments run as containers of a Docker daemon.

The address is the Docker daemon (``unix:///var/run/docker.sock``, ``tcp://host:2375``);
empty means ``DOCKER_HOST`` or the default socket, as upstream envd (which ignores the address).
Builds whose output is not already in this daemon are loaded into it (``docker load``).
The Docker client is ``envd-docker-client`` (the docker SDK), imported only when a method needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envd_core import hookimpl

if TYPE_CHECKING:
    from envd_core.runner import Runner
    from envd_docker_runner.runner import DockerRunner

__all__ = ["DockerRunner"]


def __getattr__(name: str) -> object:
    # The runner class (and the records and clients it imports) loads when asked for: every
    # envd command loads this plugin, few of them need its runner (a build that pushes never).
    if name == "DockerRunner":
        from envd_docker_runner.runner import DockerRunner

        return DockerRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def envd_runner_types() -> list[type[Runner]]:
    from envd_docker_runner.runner import DockerRunner

    return [DockerRunner]
