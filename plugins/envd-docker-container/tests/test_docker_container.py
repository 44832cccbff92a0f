"""Unit tests of the docker-container builder: no Docker Engine needed.

Addresses, options and the buildkitd.toml they produce, the docker CLI context store, and the
exec stream's demultiplexing (against a local socket speaking the Engine's framing).
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from envd_docker_client.hijack import ExecStream, start_exec
from envd_docker_container import DEFAULT_IMAGE, DockerContainerBuilder, settings, split_address
from envd_docker_container import endpoint as ep
from hypothesis import given
from hypothesis import strategies as st

from envd_core.errors import BuilderError, ValidationError
from envd_core.testing import BuilderContract

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the plugin itself runs on 3.10


class TestDockerContainerContract(BuilderContract):
    builder_cls = DockerContainerBuilder
    valid_address = "envd_buildkitd?context=remote"


# -- addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("envd_buildkitd", "envd_buildkitd"),
        ("docker-container://envd_buildkitd", "envd_buildkitd"),
        ("docker-container://my.builder-1/", "my.builder-1"),
        ("envd_buildkitd?context=remote", "envd_buildkitd?context=remote"),
        ("docker-container://bk?context=ctx.a+b", "bk?context=ctx.a+b"),
    ],
)
def test_address_accepted(raw: str, stored: str) -> None:
    assert DockerContainerBuilder.normalize_address(raw) == stored
    assert DockerContainerBuilder.normalize_address(stored) == stored


@pytest.mark.parametrize(
    "raw",
    ["", "x", "-lead", "_lead", "has space", "a/b", "name?foo=1", "name?context=bad name",
     "name?context=", "tcp://127.0.0.1:1234", "name?context=a&other=b", "é-name"],
)
def test_address_refused_in_one_line(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        DockerContainerBuilder.normalize_address(raw)
    assert "\n" not in info.value.message


def test_split_address_and_properties() -> None:
    assert split_address("bk?context=remote") == ("bk", "remote")
    builder = DockerContainerBuilder("bk?context=remote")
    assert builder.container == "bk"
    assert builder.docker_context == "remote"
    assert builder.url == "docker-container://bk?context=remote"
    assert DockerContainerBuilder.default_address == "envd_buildkitd"
    assert DockerContainerBuilder.can_bootstrap is True


@given(st.text(max_size=40))
def test_normalize_never_raises_anything_but_validation(raw: str) -> None:
    try:
        stored = DockerContainerBuilder.normalize_address(raw)
    except ValidationError:
        return
    assert "://" not in stored
    assert DockerContainerBuilder.normalize_address(stored) == stored


def test_import_loads_no_docker_sdk_and_no_grpc() -> None:
    code = ("import sys, envd_docker_container; "
            "print(sorted(m for m in ('docker', 'grpc', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# -- settings ------------------------------------------------------------------------------------
def _toml(options: dict[str, str]) -> tuple[dict[str, object], dict[str, bytes]]:
    text, files = settings.render_config(options)
    return tomllib.loads(text), files


def test_no_options_gives_an_empty_config() -> None:
    data, files = _toml({})
    assert data == {}
    assert files == {}


def test_registry_options_merge_per_host(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("CORP CA\n")
    data, files = _toml({
        "mirror": "https://mirror.corp:5000/, hub2.corp",
        "insecure-registries": "127.0.0.1:5000,registry.lan",
        "registry-ca": f"registry.lan={ca}",
    })
    registry = data["registry"]
    assert isinstance(registry, dict)
    assert registry["docker.io"] == {"mirrors": ["mirror.corp:5000", "hub2.corp"]}
    assert registry["127.0.0.1:5000"] == {"http": True, "insecure": True}
    lan = registry["registry.lan"]
    assert lan["http"] is True and lan["insecure"] is True
    (inside,) = lan["ca"]
    assert inside.startswith(settings.CONFIG_DIR + "/certs/")
    assert files == {inside: b"CORP CA\n"}


def test_upstream_registry_config_json(tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text(f"{name} bytes")
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"registries": [
        {"name": "registry.corp:5443", "ca": "ca.pem", "cert": "cert.pem", "key": "key.pem",
         "mirror": "mirror.corp"},
        {"name": "plain.corp", "use_http": True},
    ]}))
    data, files = _toml({"registry-config": str(config)})
    registry = data["registry"]
    assert isinstance(registry, dict)
    corp = registry["registry.corp:5443"]
    assert corp["mirrors"] == ["mirror.corp"]
    (pair,) = corp["keypair"]
    assert files[corp["ca"][0]] == b"ca bytes"
    assert files[pair["cert"]] == b"cert bytes" and files[pair["key"]] == b"key bytes"
    assert registry["plain.corp"] == {"http": True}


def test_missing_ca_in_registry_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"registries": [{"name": "r.corp", "ca": "gone.pem"}]}))
    with pytest.raises(ValidationError, match=r"ca file `.*gone\.pem` for registry `r\.corp`"):
        DockerContainerBuilder.check_options({"registry-config": str(config)})
    with pytest.raises(ValidationError, match="index 0"):
        config.write_text(json.dumps({"registries": [{"ca": "x"}]}))
        settings.registries({"registry-config": str(config)})


def test_registry_ca_needs_pairs_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="host=/path"):
        settings.registries({"registry-ca": "just-a-path.pem"})
    with pytest.raises(ValidationError, match="does not exist"):
        settings.registries({"registry-ca": f"r.corp={tmp_path / 'nope.pem'}"})
    with pytest.raises(ValidationError, match="registry host"):
        settings.registries({"insecure-registries": "bad host!"})


def test_user_config_is_kept_and_clashes_refused(tmp_path: Path) -> None:
    user = tmp_path / "buildkitd.toml"
    user.write_text('debug = true\n[worker.oci]\n  gc = true\n[registry."docker.io"]\n'
                    '  mirrors = ["mine"]\n')
    data, _ = _toml({"config": str(user), "insecure-registries": "lan:5000"})
    assert data["debug"] is True
    registry = data["registry"]
    assert isinstance(registry, dict)
    assert registry["docker.io"] == {"mirrors": ["mine"]}
    assert registry["lan:5000"] == {"http": True, "insecure": True}
    with pytest.raises(ValidationError, match=r"already configures registry `docker\.io`"):
        settings.render_config({"config": str(user), "mirror": "other"})


def test_fingerprint_follows_what_matters() -> None:
    base = settings.daemon_spec("bk", {}, default_image=DEFAULT_IMAGE)
    same = settings.daemon_spec("bk", {}, default_image=DEFAULT_IMAGE)
    assert base.fingerprint == same.fingerprint
    assert base.image == DEFAULT_IMAGE and base.volume == "bk_state" and base.security == "auto"
    changed = [
        settings.daemon_spec("bk", {"image": "other:1"}, default_image=DEFAULT_IMAGE),
        settings.daemon_spec("bk", {"mirror": "m.corp"}, default_image=DEFAULT_IMAGE),
        settings.daemon_spec("bk", {"network": "host"}, default_image=DEFAULT_IMAGE),
        settings.daemon_spec("bk", {"cache-volume": "none"}, default_image=DEFAULT_IMAGE),
        settings.daemon_spec("bk", {"buildkitd-flags": "--debug"}, default_image=DEFAULT_IMAGE),
    ]
    prints = {spec.fingerprint for spec in changed}
    assert base.fingerprint not in prints and len(prints) == len(changed)
    assert changed[3].volume is None
    assert changed[4].command[-1] == "--debug"
    assert base.command[:4] == ["--config", settings.CONFIG_FILE, "--addr", settings.SOCKET]
    assert settings.CONFIG_FILE in base.files


def test_flags_and_volume_names() -> None:
    assert settings.parse_flags("--debug --addr tcp://127.0.0.1:9") == (
        "--debug", "--addr", "tcp://127.0.0.1:9")
    with pytest.raises(ValidationError, match="--config"):
        settings.parse_flags("--config=/x")
    with pytest.raises(ValidationError):
        settings.parse_flags("'unbalanced")
    assert settings.volume_name("bk", "auto") == "bk_state"
    assert settings.volume_name("bk", "none") is None
    assert settings.volume_name("bk", "cache.1") == "cache.1"
    with pytest.raises(ValidationError, match="volume name"):
        settings.volume_name("bk", "bad/name")


# -- endpoints -----------------------------------------------------------------------------------
def _write_context(config: Path, name: str, host: str, *, skip_verify: bool = False,
                   tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {
        "docker": {"Host": host, "SkipTLSVerify": skip_verify}}}))
    if tls:
        d = config / "contexts" / "tls" / digest / "docker"
        d.mkdir(parents=True)
        for f in ("ca", "cert", "key"):
            (d / f"{f}.pem").write_text(f)


def test_endpoint_from_docker_context_store(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _write_context(tmp_path, "local", "unix:///run/other.sock")
    _write_context(tmp_path, "remote", "tcp://10.0.0.5:2376", tls=True)
    _write_context(tmp_path, "over-ssh", "ssh://me@host")
    local = ep.resolve("local")
    assert local.host == "unix:///run/other.sock" and not local.tls
    remote = ep.resolve("remote")
    assert remote.tls and remote.verify and remote.cert and remote.cert.endswith("cert.pem")
    with pytest.raises(BuilderError, match="supports only unix:// and tcp://"):
        ep.resolve("over-ssh")
    with pytest.raises(ValidationError, match="docker context `absent` does not exist"):
        ep.resolve("absent")


def test_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    assert ep.resolve(None) == ep.Endpoint(host=ep.DEFAULT_HOST)
    assert ep.resolve("default").host == ep.DEFAULT_HOST
    (tmp_path / "ca.pem").write_text("ca")
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker.corp:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    found = ep.resolve(None)
    assert found.tls and found.ca == str(tmp_path / "ca.pem") and found.cert is None


# -- the exec stream -----------------------------------------------------------------------------
def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_exec_stream_demultiplexes_stdout_and_keeps_stderr() -> None:
    left, right = socket.socketpair()
    wire = (_frame(1, b"hello ") + _frame(2, b"warning: x\n") + _frame(1, b"") +
            _frame(1, b"world" * 1000) + _frame(2, b"buildkitd not running\n"))
    # The first bytes arrive with the HTTP head (read ahead), the rest in odd-sized pieces.
    stream = ExecStream(left, wire[:5])

    def feed() -> None:
        rest = wire[5:]
        for i in range(0, len(rest), 7):
            right.sendall(rest[i:i + 7])
        right.close()

    threading.Thread(target=feed, daemon=True).start()
    got = b""
    while chunk := stream.recv(1000):
        assert len(chunk) <= 1000
        got += chunk
    assert got == b"hello " + b"world" * 1000
    assert stream.stderr == "warning: x\nbuildkitd not running\n"
    stream.close()


def _fake_engine(tmp_path: Path, reply: bytes) -> tuple[str, list[bytes]]:
    """A unix socket answering one request with ``reply`` (the engine's side of the attach)."""
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(4096)
        seen.append(head + b"\r\n\r\n" + body)
        conn.sendall(reply)  # head and first frame in one write: the read-ahead case
        if reply.startswith(b"HTTP/1.1 101"):
            echoed = conn.recv(4096)
            conn.sendall(_frame(1, b"echo:" + echoed))
        conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"unix://{path}", seen


def test_start_exec_keeps_bytes_sent_with_the_head(tmp_path: Path) -> None:
    host, seen = _fake_engine(tmp_path, b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\n"
                              b"Upgrade: tcp\r\n\r\n" + _frame(1, b"SETTINGS"))
    stream = start_exec(ep.Endpoint(host=host), "abc123", api_version="1.41", timeout=5)
    assert stream.recv(100) == b"SETTINGS"
    stream.sendall(b"PRI")
    assert stream.recv(100) == b"echo:PRI"
    assert stream.recv(100) == b""
    request = seen[0].decode()
    assert request.startswith("POST /v1.41/exec/abc123/start HTTP/1.1\r\n")
    assert "Upgrade: tcp" in request and '"Tty": false' in request
    stream.close()


def test_start_exec_refusal_is_one_line(tmp_path: Path) -> None:
    body = json.dumps({"message": "Container bk is not running"}).encode()
    host, _ = _fake_engine(tmp_path, b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json"
                           b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with pytest.raises(BuilderError, match="Container bk is not running") as info:
        start_exec(ep.Endpoint(host=host), "abc", api_version="1.41", timeout=5)
    assert "\n" not in info.value.message


def test_start_exec_unreachable_engine(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="cannot reach the Docker Engine"):
        start_exec(ep.Endpoint(host=f"unix://{tmp_path}/none.sock"), "x", api_version="1.41",
                   timeout=1)


# -- a parallel bootstrap waiting for the other one's container ---------------------------------
class _RemovingThenGone:
    """An engine whose container is being removed, then gone: the other bootstrap's refused
    privileged attempt on its way out, before its restricted one exists."""

    def __init__(self) -> None:
        self.calls = 0

    def inspect(self, name: str) -> dict[str, object] | None:
        self.calls += 1
        return {"State": {"Status": "removing"}} if self.calls <= 2 else None

    def logs_tail(self, container: str, lines: int = 5) -> str:
        return ""


def test_wait_for_theirs_tolerates_their_removal() -> None:
    from envd_docker_container.lifecycle import wait_until_ready

    engine = _RemovingThenGone()
    with pytest.raises(BuilderError) as caught:
        wait_until_ready(engine, "bk", 0.5, theirs=True)  # type: ignore[arg-type]
    assert "did not become ready" in caught.value.message  # waited; never "stopped"
    assert engine.calls >= 3


def test_wait_for_ours_reports_removal_at_once() -> None:
    from envd_docker_container.lifecycle import wait_until_ready

    with pytest.raises(BuilderError) as caught:
        wait_until_ready(_RemovingThenGone(), "bk", 5.0)  # type: ignore[arg-type]
    assert "stopped while starting (removing)" in caught.value.message
