"""What a kube-pod build costs the API server, on the real cluster: one TCP/TLS connection
per build (the pod listing's, upgraded to the port-forward WebSocket), and a new one when that
connection died in between.

Counted with an audit hook on ``socket.connect`` (Python's own sockets: urllib3 and
websocket-client; grpc's connections to the bridge are C and not seen).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from envd_kube_pod import KubePodBuilder

from envd_core.buildkit.client import probe

_RECORDING: list[list[tuple[str, int]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _RECORDING and isinstance(args[1], tuple):
        _RECORDING[-1].append((str(args[1][0]), int(args[1][1])))


@pytest.fixture
def connects() -> Iterator[list[tuple[str, int]]]:
    """The (host, port) of every Python socket connect while the test runs."""
    if not getattr(sys, "_envd_kube_audit", False):  # audit hooks cannot be removed: once
        sys.addaudithook(_audit)
        sys._envd_kube_audit = True  # type: ignore[attr-defined]
    _RECORDING.append([])
    try:
        yield _RECORDING[-1]
    finally:
        _RECORDING.pop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port_forwarded(namespace: str, kube_options: dict[str, str]) -> dict[str, Any]:
    """A bootstrapped one-pod Deployment whose buildkitd listens on a loopback TCP port, and
    the options of a context that port-forwards to it."""
    options = {**kube_options, "transport": "port-forward", "port": str(free_port())}
    address = KubePodBuilder.normalize_address(f"deployment/bk?namespace={namespace}")
    KubePodBuilder(address, options).bootstrap()
    return {"address": address, "options": options}


def api_server(builder: KubePodBuilder) -> tuple[str, int]:
    parts = urlsplit(builder._shared().server)
    return str(parts.hostname), int(parts.port or 443)


def test_one_api_connection_per_build(port_forwarded: dict[str, Any],
                                      connects: list[tuple[str, int]]) -> None:
    b = KubePodBuilder(port_forwarded["address"], port_forwarded["options"])
    b.project = "/projects/one"
    assert b.needs_bootstrap() is False  # the listing (as in the early-connect thread)
    conn = b.connect(timeout=30)         # the port-forward, on the listing's connection
    try:
        assert probe(conn, timeout=30)["version"] == "v0.18.2"
    finally:
        conn.close()
        b._shared().close()
    assert connects.count(api_server(b)) == 1, connects


def test_a_dead_listing_connection_falls_back_to_a_new_one(
        port_forwarded: dict[str, Any], connects: list[tuple[str, int]]) -> None:
    b = KubePodBuilder(port_forwarded["address"], port_forwarded["options"])
    b.project = "/projects/two"
    assert b.needs_bootstrap() is False
    cluster = b._shared()
    spare = cluster.take_socket()
    assert spare is not None
    spare.shutdown(socket.SHUT_RDWR)  # as when the API server closes an idle connection
    cluster._spare = spare
    conn = b.connect(timeout=30)
    try:
        assert probe(conn, timeout=30)["version"] == "v0.18.2"
    finally:
        conn.close()
        cluster.close()
    assert connects.count(api_server(b)) == 2, connects
