"""Runner type ``docker``: environments run as containers of a Docker daemon.

The address is the Docker daemon (``unix:///var/run/docker.sock``, ``tcp://host:2375``);
empty means ``DOCKER_HOST`` or the default socket, as upstream envd (which ignores the address).
Builds whose output is not already in this daemon are loaded into it (``docker load``).
"""

from __future__ import annotations

from typing import IO

from envd_core import hookimpl
from envd_core.errors import ValidationError
from envd_core.runner import Runner

__all__ = ["DockerRunner"]


class DockerRunner(Runner):
    """A Docker Engine, local or remote."""

    name = "docker"
    summary = "Docker Engine (DOCKER_HOST or the local socket)"
    address_help = "unix:///path/docker.sock or tcp://host:port (empty: DOCKER_HOST)"
    can_load_images = True

    @classmethod
    def normalize_address(cls, address: str) -> str | None:
        value = super().normalize_address(address)
        if value is not None and not value.startswith(("unix://", "tcp://")):
            raise ValidationError(
                f"runner `docker` address must be unix:///path or tcp://host:port, got `{address}`"
            )
        return value

    def client(self):  # type: ignore[no-untyped-def]
        from envd_core.dockerapi import DockerClient

        return DockerClient(self.address)

    def load_image(self, tarball: IO[bytes]) -> list[str]:
        return self.client().image_load(tarball)  # type: ignore[no-any-return]

    def push_image(self, name: str) -> None:
        from envd_core.dockerapi import registry_auth

        self.client().image_push(name, auth=registry_auth(name))


@hookimpl
def envd_runner_types() -> list[type[Runner]]:
    return [DockerRunner]
