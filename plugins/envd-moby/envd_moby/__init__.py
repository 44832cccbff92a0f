"""Builder type ``moby-worker``: the BuildKit embedded in dockerd (upstream envd's default).

No daemon to bootstrap: envd upgrades ``POST /grpc`` on the Docker API socket to h2c and speaks
BuildKit's gRPC through a local bridge. The address is only a label (``envd_buildkitd``); the
Docker daemon is ``DOCKER_HOST`` or the option ``host``.

That BuildKit (v0.8 in Docker 20.10) exports only ``moby`` (into dockerd's image store),
``local`` and ``tar``; images are pushed afterwards through the Docker API, and merge/diff ops
are not available. The Docker client is ``envd-docker-client`` (the docker SDK, plus the
hand-written ``/grpc`` upgrade), imported only when a method needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envd_core import hookimpl
from envd_core.builder import Builder, BuilderStatus
from envd_core.errors import BuilderError, EnvdError, ValidationError
from envd_core.options import Option

if TYPE_CHECKING:
    import docker

    from envd_core.buildkit.transport import Connection

__all__ = ["MobyWorkerBuilder"]


class MobyWorkerBuilder(Builder):
    """dockerd's own BuildKit, reached through the Docker Engine API."""

    name = "moby-worker"
    summary = "the BuildKit inside dockerd (no extra daemon)"
    preload = ("docker", "docker.errors", "envd_docker_client.client", "envd_docker_client.upgrade")
    address_help = "a label, e.g. envd_buildkitd"
    default_address = "envd_buildkitd"
    options = (
        Option("host", "Docker daemon to use instead of DOCKER_HOST, e.g. unix:///var/run/docker.sock"),
    )
    exporters = frozenset({"moby", "local", "tar"})
    can_push = True
    supports_merge_op = False
    exporter_applies_config = False

    @classmethod
    def check_options(cls, options: dict[str, str]) -> None:  # type: ignore[override]
        host = options.get("host")
        if host is not None and not host.startswith(("unix://", "tcp://")):
            raise ValidationError(
                f"option `host` must be unix:///path or tcp://host:port, got `{host}`"
            )

    @property
    def docker_host(self) -> str:
        """The Docker daemon: the ``host`` option, else ``DOCKER_HOST``, else the local socket."""
        from envd_docker_client.client import docker_host

        return docker_host(self.option_values.get("host"))

    def connect(self, *, timeout: float) -> Connection:
        from envd_docker_client.upgrade import dial_docker_upgrade

        from envd_core.buildkit.transport import connect_bridge

        host = self.docker_host
        return connect_bridge(
            dial_docker_upgrade(host, "/grpc", timeout=timeout),
            target=f"moby-worker ({host})",
            timeout=timeout,
        )

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """The generic probe, plus dockerd's version (its BuildKit has no Info RPC)."""
        found = super().status(timeout=timeout)
        if found.reachable and not found.version:
            from envd_docker_client.client import open_client
            from envd_docker_client.images import engine_version

            try:
                client = open_client(
                    self.option_values.get("host"), timeout=timeout, error=BuilderError
                )
                engine = engine_version(client, self.docker_host, error=BuilderError)
                found.version = f"dockerd {engine}"
            except EnvdError:
                pass  # reachable over /grpc is what counts; the version is a nicety
        return found

    def _client(self) -> docker.DockerClient:
        from envd_docker_client.client import open_client

        return open_client(self.option_values.get("host"), error=BuilderError)

    def apply_image_config(self, name: str, config: dict[str, Any]) -> None:
        """Set the config the ``moby`` exporter ignored, through the Docker API."""
        from envd_docker_client.images import commit_config

        commit_config(self._client(), self.docker_host, name, config.get("config", config),
                      error=BuilderError)

    def push(self, name: str) -> str | None:
        """Push an image from dockerd's store (after a ``moby`` export) with the user's creds."""
        from envd_docker_client.images import push_image

        return push_image(self._client(), self.docker_host, name, error=BuilderError)


@hookimpl
def envd_builder_types() -> list[type[Builder]]:
    return [MobyWorkerBuilder]
