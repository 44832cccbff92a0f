"""Unit tests of the tcp and unix builder types (no daemon needed)."""

from __future__ import annotations

import socket

import pytest
from envd_tcp import TcpBuilder, UnixBuilder, split_host_port
from hypothesis import given
from hypothesis import strategies as st

from envd_core.errors import EnvdError, ValidationError


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("127.0.0.1:1234", "127.0.0.1:1234"),
        ("tcp://127.0.0.1:1234", "127.0.0.1:1234"),
        ("TCP://buildkit.corp:8888", "buildkit.corp:8888"),
        ("tcp://[::1]:1234", "[::1]:1234"),
        (" 10.0.0.5:8888/ ", "10.0.0.5:8888"),
    ],
)
def test_tcp_address_accepted_with_or_without_scheme(raw: str, stored: str) -> None:
    assert TcpBuilder.normalize_address(raw) == stored
    # normalising what we stored changes nothing: never tcp://tcp://
    assert TcpBuilder.normalize_address(stored) == stored
    assert TcpBuilder(stored).url == f"tcp://{stored}"


@pytest.mark.parametrize(
    "raw",
    ["", "tcp://", "127.0.0.1", "tcp://tcp://h:1", "h:0", "h:65536", "h:port", "unix:///x.sock",
     "::1:1234", "a b:1", "user@h:1", "h/x:1",
     # issue 15: Unicode digits were stored as a port, a bracket as part of the host
     "127.0.0.1:\u0661\u0662\u0663", "h:\uff11\uff12", "[[::1]:1", "h]:1", "h\x1b:1"],
)
def test_tcp_bad_addresses_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        TcpBuilder.normalize_address(raw)


def test_split_host_port() -> None:
    assert split_host_port("[fe80::1]:99") == ("fe80::1", 99)
    with pytest.raises(ValidationError, match="expected"):
        split_host_port("[fe80::1]")


def test_mutual_tls_needs_cert_and_key() -> None:
    with pytest.raises(ValidationError, match="cert"):
        TcpBuilder.check_options({"cacert": "/ca", "cert": "/c"})
    TcpBuilder.check_options({"cacert": "/ca", "cert": "/c", "key": "/k"})
    TcpBuilder.check_options({"cacert": "/ca"})


def test_declared_options_include_tls_and_common() -> None:
    names = {o.name for o in TcpBuilder.options_declared()}
    assert {"cacert", "cert", "key", "servername", "ca-bundle"} <= names


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("/run/buildkit/buildkitd.sock", "/run/buildkit/buildkitd.sock"),
     ("unix:///run/buildkit/buildkitd.sock", "/run/buildkit/buildkitd.sock"),
     ("unix:///run//buildkit/./buildkitd.sock", "/run/buildkit/buildkitd.sock")],
)
def test_unix_address(raw: str, stored: str) -> None:
    assert UnixBuilder.normalize_address(raw) == stored
    assert UnixBuilder(stored).url == f"unix://{stored}"


@pytest.mark.parametrize("raw", ["", "unix://", "relative.sock", "tcp://h:1", "unix://x\x00y"])
def test_unix_bad_addresses(raw: str) -> None:
    with pytest.raises(ValidationError):
        UnixBuilder.normalize_address(raw)


@given(st.text(max_size=60))
def test_normalize_never_raises_anything_but_validation(raw: str) -> None:
    for cls in (TcpBuilder, UnixBuilder):
        try:
            stored = cls.normalize_address(raw)
        except ValidationError:
            continue
        assert "://" not in stored
        assert cls.normalize_address(stored) == stored


def test_refused_port_is_classified(tmp_path: object) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status = TcpBuilder(f"127.0.0.1:{port}").status(timeout=2)
    assert status.reachable is False
    assert status.error_kind == "refused"
    with pytest.raises(EnvdError):
        TcpBuilder(f"127.0.0.1:{port}").connect(timeout=1)


def test_plain_tcp_to_remote_host_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    builder = TcpBuilder("192.0.2.1:1234")  # TEST-NET-1: never routed, never contacted
    import envd_tcp

    envd_tcp._warned.discard(builder.address)

    def fake_connect(*args: object, **kwargs: object) -> None:
        raise ValidationError("stop here")

    import envd_core.buildkit.transport as transport

    original = transport.connect_tcp
    transport.connect_tcp = fake_connect  # type: ignore[assignment]
    try:
        for _ in range(2):
            with pytest.raises(ValidationError):
                builder.connect(timeout=0.1)
    finally:
        transport.connect_tcp = original  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert err.count("plain TCP without TLS") == 1


from envd_core.testing import BuilderContract  # noqa: E402


class TestTcpContract(BuilderContract):
    builder_cls = TcpBuilder
    valid_address = "127.0.0.1:1234"


class TestUnixContract(BuilderContract):
    builder_cls = UnixBuilder
    valid_address = "/run/buildkit/buildkitd.sock"


@pytest.mark.parametrize(("raw", "stored"), [
    ("tcp://a:1,b:2", "a:1,b:2"),
    ("a:1, tcp://[::1]:2/", "a:1,[::1]:2"),
])
def test_tcp_address_list(raw: str, stored: str) -> None:
    assert TcpBuilder.normalize_address(raw) == stored
    assert TcpBuilder.normalize_address(stored) == stored
    assert TcpBuilder(stored).addresses == stored.split(",")


@pytest.mark.parametrize(("raw", "fragment"), [
    ("a:1,,b:2", "empty entry"), ("a:1,a:1", "names a daemon twice"), ("a:1,b", "host:port")])
def test_tcp_bad_address_lists(raw: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        TcpBuilder.normalize_address(raw)


def test_address_list_all_refused_is_one_line() -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    builder = TcpBuilder(f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    with pytest.raises(EnvdError) as info:
        builder.connect(timeout=1)
    assert info.value.message.startswith(f"none of the 2 daemons of {builder.url} answers: "
                                         f"127.0.0.1:{ports[0]}: ")
    assert f"; 127.0.0.1:{ports[1]}: " in info.value.message
    assert "\n" not in info.value.message


def _connect_stops_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """``connect_tcp`` raises at once: what is tested is what happens before it."""
    import envd_core.buildkit.transport as transport

    def fake_connect(*args: object, **kwargs: object) -> None:
        raise ValidationError("stop here")

    monkeypatch.setattr(transport, "connect_tcp", fake_connect)


def test_a_status_probe_does_not_warn_but_a_use_still_does(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import envd_tcp

    builder = TcpBuilder("192.0.2.1:1234")  # TEST-NET-1: never contacted (connect is faked)
    envd_tcp._warned.discard(builder.address)
    _connect_stops_here(monkeypatch)
    for _ in range(2):
        status = builder.status(timeout=0.1)
        assert status.reachable is False and status.error == "stop here"
    assert "plain TCP" not in capsys.readouterr().err
    with pytest.raises(ValidationError):
        builder.connect(timeout=0.1)  # a build's connect: the probes did not use up the warning
    assert capsys.readouterr().err.count("plain TCP without TLS") == 1


def test_warnings_name_each_plain_remote_address() -> None:
    mixed = TcpBuilder("127.0.0.1:1234,192.0.2.1:1234,[::1]:1234,buildkit.corp:1234")
    assert [w.split(" ", 1)[0] for w in mixed.warnings()] == [
        "tcp://192.0.2.1:1234", "tcp://buildkit.corp:1234"]
    assert TcpBuilder("127.0.0.1:1234").warnings() == []
    assert TcpBuilder("192.0.2.1:1234", {"cacert": "/etc/ca.pem"}).warnings() == []


def test_create_warns_and_inspect_does_not(envd_config_dir: object,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from envd_core.plugins import Plugins
    from envd_core.testing import EnvdCli

    cli = EnvdCli(lambda: Plugins.create())
    _connect_stops_here(monkeypatch)
    created = cli("context", "create", "--name", "far", "--builder", "tcp",
                  "--builder-address", "192.0.2.1:1234")
    assert created.exit_code == 0, created.stderr
    assert created.stderr.count("warning: tcp://192.0.2.1:1234 is plain TCP without TLS") == 1
    described = cli("context", "update", "far", "--description", "x")
    assert described.exit_code == 0 and "plain TCP" not in described.stderr
    probed = cli("context", "inspect", "far", "--timeout", "0.1")
    assert probed.exit_code == 0, probed.stderr
    assert '"reachable": false' in probed.stdout
    assert "plain TCP" not in probed.stderr
    local = cli("context", "create", "--name", "near", "--builder", "tcp",
                "--builder-address", "127.0.0.1:1234")
    assert local.exit_code == 0 and "warning" not in local.stderr
