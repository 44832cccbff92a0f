"""Transport: Go durations, timeouts and failure classification against real local sockets."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.buildkit.errors import BuildkitConnectionError, classify
from envd_core.buildkit.transport import (
    TLSConfig,
    connect_bridge,
    connect_tcp,
    connect_timeout,
    connect_unix,
    parse_go_duration,
)
from envd_core.errors import BuilderError, ValidationError


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("250us", 0.00025),
        ("10ns", 1e-8),
        ("-2s", -2.0),
        (".5s", 0.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 s", "5sec", "1m5", "abc", "5s!"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValidationError, match="invalid duration"):
        parse_go_duration(text)


def test_connect_timeout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_CONNECTING_TIMEOUT", raising=False)
    assert connect_timeout() == 5.0
    assert connect_timeout(1.5) == 1.5
    monkeypatch.setenv("BUILDKIT_CONNECTING_TIMEOUT", "750ms")
    assert connect_timeout() == 0.75
    monkeypatch.setenv("BUILDKIT_CONNECTING_TIMEOUT", "soon")
    with pytest.raises(ValidationError, match="BUILDKIT_CONNECTING_TIMEOUT `soon`"):
        connect_timeout()
    monkeypatch.setenv("BUILDKIT_CONNECTING_TIMEOUT", "0s")
    with pytest.raises(ValidationError, match="positive"):
        connect_timeout()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_tcp_port() -> None:
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp("127.0.0.1", _free_port(), timeout=0.5)
    assert ei.value.kind == "refused"
    assert "connection refused" in str(ei.value) and "\n" not in str(ei.value)
    assert isinstance(ei.value, BuilderError)


def test_missing_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_unix(tmp_path / "nope.sock", timeout=0.3)
    assert ei.value.kind == "refused"
    assert f"`unix://{tmp_path / 'nope.sock'}`" in str(ei.value)


@pytest.fixture
def http1_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_http1_server_is_not_buildkit(http1_server: int) -> None:
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp("127.0.0.1", http1_server, timeout=2)
    assert ei.value.kind == "not-buildkit"
    assert "is not a BuildKit daemon" in str(ei.value)


def test_grpc_server_without_control_is_not_buildkit() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(BuildkitConnectionError) as ei:
            connect_tcp("127.0.0.1", port, timeout=2)
        assert ei.value.kind == "not-buildkit"
    finally:
        server.stop(None)


def _openssl_cert(dir: Path, stem: str) -> tuple[Path, Path]:
    key, cert = dir / f"{stem}.key", dir / f"{stem}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A plain TLS server (no gRPC behind it) with a self-signed certificate."""
    cert, key = _openssl_cert(tmp_path, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1024)
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield int(lsock.getsockname()[1]), cert
    stop.set()
    lsock.close()


def test_tls_server_cert_rejected_by_us(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = tls_server
    other_ca, _ = _openssl_cert(tmp_path, "other-ca")
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp(
            "127.0.0.1", port, tls=TLSConfig(ca=other_ca, server_name="localhost"), timeout=2
        )
    assert ei.value.kind == "tls"
    assert "server's certificate was rejected by us" in str(ei.value)


def test_tls_client_to_plain_server(http1_server: int, tmp_path: Path) -> None:
    ca, _ = _openssl_cert(tmp_path, "ca")
    with pytest.raises(BuildkitConnectionError) as ei:
        connect_tcp("127.0.0.1", http1_server, tls=TLSConfig(ca=ca), timeout=2)
    assert ei.value.kind == "tls"


def test_tls_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"`.*missing\.pem`"):
        TLSConfig(ca=tmp_path / "missing.pem").credentials()
    with pytest.raises(ValidationError, match="go together"):
        TLSConfig(cert=tmp_path / "c.pem").credentials()


def test_dns_failure() -> None:
    with pytest.raises(BuildkitConnectionError) as ei:
        # classification, not speed: a slow resolver on a loaded machine must not read as timeout
        connect_tcp("does-not-exist.invalid", 1234, timeout=15)
    assert ei.value.kind == "dns"


def test_classify_plain_exceptions() -> None:
    assert classify(ConnectionRefusedError()) == "refused"
    assert classify(TimeoutError()) == "timeout"
    assert classify(RuntimeError("weird")) == "unavailable"


def _bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("envd-bk-bridge")]


def test_bridge_cleans_up_after_failed_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the folder this bridge made is looked at: the shared /tmp also holds the bridges of
    builds running beside the suite (a bench), which once made this test fail."""
    import shutil
    import tempfile

    def refuse() -> socket.socket:
        raise BuildkitConnectionError("the far end is not BuildKit", kind="not-buildkit")

    own = tempfile.mkdtemp(prefix="envd-bkt-", dir="/tmp")  # short: AF_UNIX paths are 107 bytes
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        path: str = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "tempdir", own)  # the bridge's folder goes under ours
    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    try:
        with pytest.raises(BuildkitConnectionError) as ei:
            connect_bridge(refuse, target="refusing", timeout=2)
        assert ei.value.kind == "not-buildkit"
        assert _bridge_threads() == []
        bridges = [p for p in made if os.path.basename(p).startswith("envd-bk-")]
        assert len(bridges) == 1 and os.path.dirname(bridges[0]) == own, made
        assert not os.path.exists(bridges[0])
        assert os.listdir(own) == []
    finally:
        shutil.rmtree(own, ignore_errors=True)


def test_bridge_splices_to_real_grpc_server_and_closes() -> None:
    """The bridge carries a real gRPC exchange (a health server) and leaves nothing behind."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from envd_core.buildkit._pb import control_pb2

    server = grpc.server(ThreadPoolExecutor(2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        conn = connect_bridge(
            lambda: socket.create_connection(("127.0.0.1", port)), target="bridge-test", wait=False
        )
        call = conn.channel.unary_unary(
            "/moby.buildkit.v1.Control/ListWorkers",
            request_serializer=control_pb2.ListWorkersRequest.SerializeToString,
            response_deserializer=control_pb2.ListWorkersResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as ei:
            call(control_pb2.ListWorkersRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED  # it went all the way through
        sock_dir = os.path.dirname(conn._closers[0].__self__.path)  # type: ignore[attr-defined]
        conn.close()
        conn.close()  # idempotent
        assert not os.path.exists(sock_dir)
        assert _bridge_threads() == []
    finally:
        server.stop(None)


def test_bad_addresses_are_clear() -> None:
    from envd_core.buildkit.transport import connect_address

    with pytest.raises(ValidationError, match="`tcp://host`"):
        connect_address("tcp://host")
    # container and pod addresses belong to builder plugins, not to the core
    for address in ("docker-container://bk", "kube-pod://pod", "ftp://x"):
        with pytest.raises(ValidationError, match=f"unsupported BuildKit address `{address}`"):
            connect_address(address)


def test_connect_address_refused_tcp() -> None:
    from envd_core.buildkit.transport import connect_address

    with pytest.raises(BuildkitConnectionError) as ei:
        connect_address(f"tcp://127.0.0.1:{_free_port()}", timeout=0.3)
    assert ei.value.kind == "refused"
