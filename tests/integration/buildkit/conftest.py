"""Connections to every real BuildKit endpoint the infra provides (unix, tcp, mTLS, dockerd)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.transport import (
    Connection,
    TLSConfig,
    connect_bridge,
    connect_tcp,
    connect_unix,
)

ENDPOINTS = ("unix", "tcp", "mtls", "dockerd")


def _hostport(addr: str) -> tuple[str, int]:
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def open_endpoint(infra: dict[str, Any], name: str) -> Connection:
    """Open a connection to the named infra endpoint."""
    if name == "unix":
        return connect_unix(infra["BUILDKIT_UNIX"])
    if name == "tcp":
        return connect_tcp(*_hostport(infra["BUILDKIT_TCP"]))
    if name == "mtls":
        tls = TLSConfig(
            infra["BUILDKIT_MTLS_CA"],
            infra["BUILDKIT_MTLS_CERT"],
            infra["BUILDKIT_MTLS_KEY"],
            infra["BUILDKIT_MTLS_SERVERNAME"],
        )
        return connect_tcp(*_hostport(infra["BUILDKIT_MTLS"]), tls=tls)
    if name == "dockerd":
        # the h2c upgrade lives with the Docker client plugins, not in the core
        from envd_docker_client.upgrade import dial_docker_upgrade

        return connect_bridge(
            dial_docker_upgrade(infra["DOCKER_HOST"]), target=f"{infra['DOCKER_HOST']} (/grpc)"
        )
    raise ValueError(name)


@pytest.fixture(params=ENDPOINTS)
def endpoint(
    request: pytest.FixtureRequest, infra: dict[str, Any]
) -> Iterator[tuple[str, BuildkitClient]]:
    """(name, client) for each real endpoint in turn."""
    conn = open_endpoint(infra, request.param)
    try:
        yield request.param, BuildkitClient(conn)
    finally:
        conn.close()


@pytest.fixture
def bk(infra: dict[str, Any]) -> Iterator[BuildkitClient]:
    """A client on the root buildkitd's unix socket."""
    conn = open_endpoint(infra, "unix")
    try:
        yield BuildkitClient(conn)
    finally:
        conn.close()


@pytest.fixture
def dockerd_bk(infra: dict[str, Any]) -> Iterator[BuildkitClient]:
    """A client on dockerd 20.10's embedded BuildKit (v0.8) through the /grpc upgrade bridge."""
    conn = open_endpoint(infra, "dockerd")
    try:
        yield BuildkitClient(conn)
    finally:
        conn.close()
