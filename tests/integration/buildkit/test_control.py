"""Control RPCs against every real endpoint: unix, tcp, mTLS and dockerd 20.10 via /grpc."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from envd_core.buildkit.client import BuildkitClient, probe
from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.buildkit.transport import (
    TLSConfig,
    connect_bridge,
    connect_tcp,
    dial_process,
)


def _hostport(addr: str) -> tuple[str, int]:
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def test_list_workers(endpoint: tuple[str, BuildkitClient]) -> None:
    name, client = endpoint
    workers = client.list_workers()
    assert workers, f"{name}: no workers"
    assert any(p.startswith("linux/amd64") for w in workers for p in w.platforms)
    if name == "dockerd":
        assert workers[0].id == "moby"
    else:
        assert workers[0].labels["org.mobyproject.buildkit.worker.executor"] == "oci"
        assert workers[0].gc_policy  # buildkitd always reports its GC rules


def test_info(endpoint: tuple[str, BuildkitClient]) -> None:
    name, client = endpoint
    info = client.info()
    if name == "dockerd":
        assert info is None  # v0.8: Info is UNIMPLEMENTED
    else:
        assert info is not None and info.package == "github.com/moby/buildkit"


def test_disk_usage_and_prune(endpoint: tuple[str, BuildkitClient]) -> None:
    _name, client = endpoint
    records = client.disk_usage()
    assert all(r.id and r.size >= 0 for r in records)
    # Prune only what is older than a day: exercises the stream without hurting other tests.
    pruned = client.prune(keep_duration=24 * 3600)
    assert isinstance(pruned, list)
    assert all(r.id for r in pruned)


def test_probe_reports_everything(endpoint: tuple[str, BuildkitClient]) -> None:
    name, client = endpoint
    out = probe(client.connection, timeout=5)
    assert out["reachable"] and out["error"] is None and out["workers"] >= 1
    assert "linux/amd64" in out["platforms"] and out["latency_ms"] >= 0
    assert (out["version"] is None) == (name == "dockerd")


def test_mtls_wrong_ca_is_a_clear_tls_error(infra: dict[str, Any]) -> None:
    tls = TLSConfig(
        infra["BUILDKIT_TLS_BAD_CA"],
        infra["BUILDKIT_MTLS_CERT"],
        infra["BUILDKIT_MTLS_KEY"],
        infra["BUILDKIT_MTLS_SERVERNAME"],
    )
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp(*_hostport(infra["BUILDKIT_MTLS"]), tls=tls, timeout=3)
    assert ei.value.kind == "tls"
    assert "server's certificate was rejected by us" in str(ei.value)
    assert infra["BUILDKIT_MTLS"].removeprefix("tcp://") in str(ei.value)


def test_mtls_missing_client_cert_is_a_clear_tls_error(infra: dict[str, Any]) -> None:
    tls = TLSConfig(infra["BUILDKIT_MTLS_CA"], server_name=infra["BUILDKIT_MTLS_SERVERNAME"])
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp(*_hostport(infra["BUILDKIT_MTLS"]), tls=tls, timeout=3)
    assert ei.value.kind == "tls"
    assert "client certificate was rejected or missing" in str(ei.value)


def test_plaintext_to_mtls_port_says_tls_may_be_needed(infra: dict[str, Any]) -> None:
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp(*_hostport(infra["BUILDKIT_MTLS"]), timeout=3)
    assert "TLS" in str(ei.value)


def test_dial_stdio_bridge_and_no_leftovers(infra: dict[str, Any]) -> None:
    """buildctl dial-stdio as the byte stream (what docker-container:// builders use)."""
    argv = [infra["BUILDCTL"], "--addr", infra["BUILDKIT_UNIX"], "dial-stdio"]
    conn = connect_bridge(dial_process(argv), target="dial-stdio")
    bridge = conn._closers[0].__self__  # type: ignore[attr-defined]
    streams = list(bridge._streams)
    procs = [s.proc for s in streams if hasattr(s, "proc")]
    assert procs, "the bridge should have spawned buildctl dial-stdio"
    assert BuildkitClient(conn).list_workers()
    conn.close()
    assert all(p.poll() is not None for p in procs)
    assert not [t for t in threading.enumerate() if t.name.startswith("envd-bk-bridge")]


def test_solve_with_status_on_every_endpoint(
    endpoint: tuple[str, BuildkitClient], infra: dict[str, Any]
) -> None:
    import secrets

    from envd_core.buildkit import llb
    from envd_core.buildkit.progress import BuildTrace

    name, client = endpoint
    token = secrets.token_hex(6)
    st = llb.image(infra["IMAGE_BUSYBOX"]).run(f"echo via-{name}-{token}", name="echo").root()
    trace = BuildTrace()
    client.solve(st.mkfile("/f", token).to_definition(), on_status=trace.update)
    step = next(s for s in trace.steps.values() if s.name == "echo")
    assert f"via-{name}-{token}" in step.logs
