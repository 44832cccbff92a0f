"""Runner type ``docker``: environments run as containers of a Docker daemon.

The address is the Docker daemon (``unix:///var/run/docker.sock``, ``tcp://host:2375``);
empty means ``DOCKER_HOST`` or the default socket, as upstream envd (which ignores the address).
Builds whose output is not already in this daemon are loaded into it (``docker load``).
The Docker client is ``envd-docker-client`` (the docker SDK), imported only when a method needs it.
"""

from __future__ import annotations

from envd_core import hookimpl
from envd_core.runner import Runner
from envd_docker_runner.runner import DockerRunner

__all__ = ["DockerRunner"]


@hookimpl
def envd_runner_types() -> list[type[Runner]]:
    return [DockerRunner]
