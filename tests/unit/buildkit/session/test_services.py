"""Session services driven by a real gRPC client playing the daemon (same wire as buildkitd)."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import grpc
import pytest

from envd_core.buildkit._pb import auth_pb2, filesync_pb2, health_pb2, secrets_pb2
from envd_core.buildkit._pb import fsutil_types_pb2 as fs
from envd_core.buildkit.session import AuthProvider, ExportTarget, LocalDir, SecretSource, Session
from envd_core.buildkit.session.walk import MODE_DIR, go_mode


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "big.bin").write_bytes(os.urandom(3 * (1 << 20) + 7))
    (root / "cache").mkdir()
    (root / "cache" / "junk").write_text("junk")
    (root / "notes.log").write_text("log")
    (root / ".dockerignore").write_text("cache\n*.log\n")
    return root


def test_filesync_sends_tree_honouring_dockerignore(tree: Path, daemon_side: Any) -> None:
    with Session(shared_key="k", local_dirs={"context": LocalDir(tree)}) as session:
        peer = daemon_side(session.serve_local())
        stats, data = peer.fetch_dir("context")
    assert [s.path for s in stats] == [".dockerignore", "big.bin", "src", "src/app.py"]
    assert data["big.bin"] == (tree / "big.bin").read_bytes()
    assert data["src/app.py"] == b"print('hi')\n"
    src = stats[2]
    assert src.mode == go_mode(os.lstat(tree / "src").st_mode) and src.mode & MODE_DIR
    assert all(s.uid == 0 and s.gid == 0 for s in stats)
    [transfer] = session.transfers
    assert transfer.bytes_by_path["big.bin"] == (tree / "big.bin").stat().st_size
    assert transfer.data_packets == 4 + 1 + 1  # 1 MiB chunks of big.bin, then the small files


def test_filesync_applies_daemon_patterns(tree: Path, daemon_side: Any) -> None:
    local = LocalDir(tree, use_dockerignore=False)
    with Session(shared_key="k", local_dirs={"context": local}) as session:
        peer = daemon_side(session.serve_local())
        stats, _ = peer.fetch_dir(
            "context",
            metadata=[("include-patterns", "src"), ("include-patterns", "*.log")],
        )
        assert [s.path for s in stats] == ["notes.log", "src", "src/app.py"]
        stats, _ = peer.fetch_dir(
            "context",
            metadata=[("exclude-patterns", "big%2Ebin"), ("exclude-patterns-encoded", "1")],
        )
        assert "big.bin" not in [s.path for s in stats]


def test_filesync_only_requested_files_are_sent(tree: Path, daemon_side: Any) -> None:
    with Session(shared_key="k", local_dirs={"context": LocalDir(tree)}) as session:
        peer = daemon_side(session.serve_local())
        _, data = peer.fetch_dir("context", want=lambda p: p == "src/app.py")
    assert list(data) == ["src/app.py"]
    assert session.transfers[0].bytes_by_path == {"src/app.py": 12}


def test_filesync_unknown_dir_is_not_found(tree: Path, daemon_side: Any) -> None:
    with Session(shared_key="k", local_dirs={"context": LocalDir(tree)}) as session:
        peer = daemon_side(session.serve_local())
        with pytest.raises(grpc.RpcError) as info:
            peer.fetch_dir("elsewhere")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_secrets(daemon_side: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_TEST_TOKEN", "t0k3n")
    secrets = {
        "tok": SecretSource.from_env("ENVD_TEST_TOKEN"),
        "raw": SecretSource.from_bytes(b"x"),
    }
    with Session(shared_key="k", secrets=secrets) as session:
        channel = daemon_side(session.serve_local()).channel
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        assert check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        get = channel.unary_unary(
            "/moby.buildkit.secrets.v1.Secrets/GetSecret",
            request_serializer=secrets_pb2.GetSecretRequest.SerializeToString,
            response_deserializer=secrets_pb2.GetSecretResponse.FromString,
        )
        assert get(secrets_pb2.GetSecretRequest(ID="tok"), timeout=5).data == b"t0k3n"
        assert get(secrets_pb2.GetSecretRequest(ID="raw"), timeout=5).data == b"x"
        with pytest.raises(grpc.RpcError) as info:
            get(secrets_pb2.GetSecretRequest(ID="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_auth_credentials_from_docker_config(tmp_path: Path, daemon_side: Any) -> None:
    config = tmp_path / "config.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5443": {"auth": token},
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"bob:pw").decode()},
                }
            }
        )
    )
    auth = AuthProvider.from_docker_config(str(config))
    with Session(shared_key="k", auth=auth) as session:
        assert "/moby.filesync.v1.Auth/Credentials" in session.methods()
        channel = daemon_side(session.serve_local()).channel
        creds = channel.unary_unary(
            "/moby.filesync.v1.Auth/Credentials",
            request_serializer=auth_pb2.CredentialsRequest.SerializeToString,
            response_deserializer=auth_pb2.CredentialsResponse.FromString,
        )
        got = creds(auth_pb2.CredentialsRequest(Host="127.0.0.1:5443"), timeout=5)
        assert (got.Username, got.Secret) == ("alice", "s3cret")
        got = creds(auth_pb2.CredentialsRequest(Host="registry-1.docker.io"), timeout=5)
        assert (got.Username, got.Secret) == ("bob", "pw")
        got = creds(auth_pb2.CredentialsRequest(Host="other:5000"), timeout=5)
        assert (got.Username, got.Secret) == ("", "")
        token_authority = channel.unary_unary(
            "/moby.filesync.v1.Auth/GetTokenAuthority",
            request_serializer=auth_pb2.GetTokenAuthorityRequest.SerializeToString,
            response_deserializer=auth_pb2.GetTokenAuthorityResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            token_authority(auth_pb2.GetTokenAuthorityRequest(Host="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_auth_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "docker-credential-envdtest"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        'if [ "$server" = "reg.example:443" ]; then '
        'echo \'{"ServerURL":"reg.example:443","Username":"h","Secret":"hs"}\'; '
        "else echo 'credentials not found' >&2; exit 1; fi\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    auth = AuthProvider(config={"credHelpers": {"reg.example:443": "envdtest"}})
    assert auth.lookup("reg.example:443").username == "h"
    assert auth.lookup("reg.example:443").secret == "hs"
    assert auth.lookup("unknown").username == ""


def _send_bytes(channel: grpc.Channel, chunks: list[bytes], exporter_id: str = "0") -> None:
    call = channel.stream_stream(
        "/moby.filesync.v1.FileSend/DiffCopy",
        request_serializer=filesync_pb2.BytesMessage.SerializeToString,
        response_deserializer=filesync_pb2.BytesMessage.FromString,
    )
    messages = (filesync_pb2.BytesMessage(data=c) for c in chunks)
    list(call(messages, metadata=[("buildkit-attachable-exporter-id", exporter_id)], timeout=10))


def test_filesend_tarball_to_file_and_fileobj(tmp_path: Path, daemon_side: Any) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    payload = buf.getvalue()
    sink = io.BytesIO()
    targets = [ExportTarget.file(tmp_path / "out" / "image.tar"), ExportTarget.file(sink)]
    with Session(shared_key="k", export=targets) as session:
        channel = daemon_side(session.serve_local()).channel
        _send_bytes(channel, [payload[:1000], payload[1000:]], "0")
        _send_bytes(channel, [payload], "1")
    assert (tmp_path / "out" / "image.tar").read_bytes() == payload
    assert sink.getvalue() == payload
    assert not (tmp_path / "out" / "image.tar.partial").exists()


def test_filesend_local_directory(tmp_path: Path, tree: Path, daemon_side: Any) -> None:
    """The daemon sends fsutil packets; the session receives them into a directory."""
    from envd_core.buildkit.session.walk import Filter, walk

    dest = tmp_path / "exported"
    entries = list(walk(str(tree), Filter.build()))
    with Session(shared_key="k", export=ExportTarget.directory(dest)) as session:
        channel = daemon_side(session.serve_local()).channel
        call = channel.stream_stream(
            "/moby.filesync.v1.FileSend/DiffCopy",
            request_serializer=None,
            response_deserializer=fs.Packet.FromString,
        )
        import queue

        outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        for e in entries:
            stat = fs.Stat(path=e.path, mode=e.mode, size=e.size, mod_time=e.mtime_ns)
            outgoing.put(fs.Packet(type=fs.Packet.PACKET_STAT, stat=stat).SerializeToString())
        outgoing.put(fs.Packet(type=fs.Packet.PACKET_STAT).SerializeToString())

        def requests() -> Any:
            while (item := outgoing.get()) is not None:
                yield item

        responses = call(requests(), timeout=10)
        for packet in responses:
            if packet.type == fs.Packet.PACKET_REQ:
                entry = entries[packet.ID]
                data = (tree / entry.path).read_bytes()
                for i in range(0, len(data), 65536):
                    chunk = fs.Packet(
                        type=fs.Packet.PACKET_DATA, ID=packet.ID, data=data[i : i + 65536]
                    )
                    outgoing.put(chunk.SerializeToString())
                end = fs.Packet(type=fs.Packet.PACKET_DATA, ID=packet.ID)
                outgoing.put(end.SerializeToString())
            elif packet.type == fs.Packet.PACKET_FIN:
                outgoing.put(fs.Packet(type=fs.Packet.PACKET_FIN).SerializeToString())
                outgoing.put(None)
    for e in entries:
        assert (dest / e.path).exists()
    assert (dest / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    mtime = (tree / "src" / "app.py").stat().st_mtime_ns
    assert (dest / "src" / "app.py").stat().st_mtime_ns == mtime


def test_close_is_idempotent_and_removes_socket_dir(tree: Path) -> None:
    session = Session(shared_key="k", local_dirs={"context": LocalDir(tree)})
    address = session.serve_local()
    path = address[len("unix:") :]
    assert os.path.exists(path)
    session.close()
    session.close()
    assert not os.path.exists(os.path.dirname(path))


def test_cancelled_download_does_not_wedge_the_session(tmp_path: Path, daemon_side: Any) -> None:
    """The daemon may drop a transfer midway; other calls on the session keep working."""
    root = tmp_path / "big"
    root.mkdir()
    (root / "blob").write_bytes(b"\0" * (64 << 20))
    with Session(shared_key="k", local_dirs={"context": LocalDir(root)}) as session:
        channel = daemon_side(session.serve_local()).channel
        call = channel.stream_stream(
            "/moby.filesync.v1.FileSync/DiffCopy",
            request_serializer=fs.Packet.SerializeToString,
            response_deserializer=fs.Packet.FromString,
        )(
            iter([fs.Packet(type=fs.Packet.PACKET_REQ, ID=0)]),
            metadata=[("dir-name", "context")],
        )
        got = 0
        for packet in call:
            got += len(packet.data)
            if got > (4 << 20):
                call.cancel()
                break
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        for _ in range(3):
            assert check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        _, data = daemon_side(session.serve_local()).fetch_dir("context")
        assert len(data["blob"]) == 64 << 20
