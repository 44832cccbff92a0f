"""Example envd plugin: the builder ``example-socket`` and the runner ``example-docker-cli``.

It reaches a BuildKit daemon through a *socket directory*: the address is a directory, and the
daemon listens on ``<directory>/buildkitd.sock`` (the layout ``buildkitd --root DIR`` setups
often use). It shows everything a builder plugin needs:

- a :class:`~envd_core.builder.Builder` subclass with a ``name``, help texts and typed options;
- an address check (``normalize_address``) that accepts the address with or without scheme;
- ``connect`` importing grpc lazily, so ``envd context ls`` stays fast;
- the ``envd_builder_types`` hook, exposed through the entry point group ``envd``.

The runner (:mod:`envd_example_plugin.runner`) runs environments as containers through the
``docker`` command-line client, showing a runner written without any SDK.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from envd_core import hookimpl
from envd_core.builder import Builder
from envd_core.errors import ValidationError
from envd_core.options import Option
from envd_example_plugin.runner import DockerCliRunner

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection

__all__ = ["DockerCliRunner", "SocketDirBuilder"]

SOCKET_NAME = "buildkitd.sock"


class SocketDirBuilder(Builder):
    """BuildKit listening on ``<directory>/buildkitd.sock``."""

    name = "example-socket"
    summary = "BuildKit on a unix socket inside a directory (example plugin)"
    address_help = "absolute path of the directory holding buildkitd.sock"
    default_address = "/run/buildkit"
    options = (
        Option("socket", "file name of the socket inside the directory", default=SOCKET_NAME),
        Option("wait", "wait until the daemon answers before building", kind="bool",
               default="true"),
    )

    @classmethod
    def normalize_address(cls, address: str) -> str:
        """An absolute directory path without trailing slash; ``example-socket://`` optional."""
        value = super().normalize_address(address)
        if not value.startswith("/"):
            raise ValidationError(
                f"builder `{cls.name}` needs an absolute directory path, got `{address}`",
                hint=f"for example {cls.name}:///run/buildkit",
            )
        # one spelling per directory, so the same daemon is never stored twice
        return os.path.normpath(value)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.address, self.option("socket"))

    def connect(self, *, timeout: float) -> Connection:
        """Open gRPC to the socket; grpc is imported here, never at module import."""
        from envd_core.buildkit.transport import connect_unix

        return connect_unix(self.socket_path, timeout=timeout, wait=self.option("wait"))


@hookimpl
def envd_builder_types() -> list[type[Any]]:
    """The builder types this plugin adds."""
    return [SocketDirBuilder]


@hookimpl
def envd_runner_types() -> list[type[Any]]:
    """The runner types this plugin adds."""
    return [DockerCliRunner]
