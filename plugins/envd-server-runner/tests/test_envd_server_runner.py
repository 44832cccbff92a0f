"""Unit tests of the envd-server runner: addresses, TLS settings, tokens, the CLI's login."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from envd_docker_runner import DockerRunner
from envd_server_client.address import DEFAULT_ADDRESS, parse_address, tls_settings
from envd_server_client.tokens import Credential, TokenStore
from envd_server_runner import EnvdServerRunner

from envd_core.errors import RunnerError, ValidationError
from envd_core.testing import EnvdCli, RunnerContract, StubBuilder, make_plugin


class TestEnvdServerRunnerContract(RunnerContract):
    """The static half of the contract (the lifecycle runs in tests/integration on a double)."""

    runner_cls = EnvdServerRunner
    valid_address = "https://envd.example.com:8443/team"


@pytest.fixture(autouse=True)
def _no_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ENVD_SERVER_HOST", "ENVD_SERVER_CERT_PATH", "ENVD_SERVER_TLS_VERIFY"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize(("given", "display"), [
    ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
    ("https://envd.example.com/team/", "https://envd.example.com:443/team"),
    ("envd.example.com:8080", "http://envd.example.com:8080"),
    ("tcp://10.0.0.5:8080", "tcp://10.0.0.5:8080"),
    ("envd-server://http://[::1]:8080", "http://[::1]:8080"),
])
def test_addresses(given: str, display: str) -> None:
    assert EnvdServerRunner.normalize_address(given) == display
    assert EnvdServerRunner.normalize_address(display) == display


def test_address_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_address(None).display == DEFAULT_ADDRESS
    monkeypatch.setenv("ENVD_SERVER_HOST", "https://srv.example:9443")
    assert parse_address("").display == "https://srv.example:9443"
    assert parse_address("http://other:1").display == "http://other:1"  # the context wins


@pytest.mark.parametrize(("given", "message"), [
    ("ftp://host:21", ("runner `envd-server` address must be http(s)://host:port[/path], "
                       "got `ftp://host:21`")),
    ("http://host:99999", "invalid port in envd-server address `http://host:99999`"),
    ("http://:8080", "envd-server address `http://:8080` names no host"),
])
def test_bad_addresses_in_one_line(given: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        EnvdServerRunner.normalize_address(given)
    assert str(info.value) == message


def test_tls_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_settings(parse_address("http://h:1"), {}) is None
    system = tls_settings(parse_address("https://h:1"), {})
    assert system is not None and system.cacert is None and system.verify
    own = tls_settings(parse_address("https://h:1"), {"cacert": "/ca.pem"})
    assert own is not None and own.cacert == "/ca.pem"
    with pytest.raises(ValidationError, match="`cert` and `key` go together"):
        tls_settings(parse_address("https://h:1"), {"cert": "/c.pem"})
    monkeypatch.setenv("ENVD_SERVER_CERT_PATH", str(tmp_path))
    with pytest.raises(ValidationError, match=r"lacks .*ca\.pem"):
        tls_settings(parse_address("http://h:1"), {})
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text("x")
    upstream = tls_settings(parse_address("http://h:1"), {})
    # upstream: the variable turns TLS on, and an empty ENVD_SERVER_TLS_VERIFY skips verifying
    assert upstream is not None and upstream.source == "ENVD_SERVER_CERT_PATH"
    assert not upstream.verify and upstream.cacert == str(tmp_path / "ca.pem")
    monkeypatch.setenv("ENVD_SERVER_TLS_VERIFY", "1")
    verified = tls_settings(parse_address("http://h:1"), {})
    assert verified is not None and verified.verify


def test_token_store(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens")
    assert store.load("a b/c") is None
    store.save(Credential(context="a b/c", address="http://h:1", login_name="u", token="T0K"))
    path = store.path("a b/c")
    assert path.parent == store.directory and path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(store.directory) == [path.name]  # no temporary file left behind
    loaded = store.load("a b/c")
    assert loaded is not None and loaded.token == "T0K" and "T0K" not in repr(loaded)
    assert [c.context for c in store.for_address("http://h:1")] == ["a b/c"]
    path.write_text("{not json")
    with pytest.raises(RunnerError, match="unreadable or damaged"):
        store.load("a b/c")
    assert store.remove("a b/c") and not store.remove("a b/c")


def test_credential_lookup(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    runner = EnvdServerRunner("http://h:1", tokens=store)
    with pytest.raises(RunnerError) as info:
        runner.credential()
    assert str(info.value) == "not logged in to envd-server `http://h:1`"
    assert info.value.hint == "log in with `envd login`"
    for ctx in ("x", "y"):
        store.save(Credential(context=ctx, address="http://h:1", login_name=ctx, token="t"))
    with pytest.raises(RunnerError, match=r"several contexts hold a login .* \(x, y\)"):
        runner.credential()
    assert EnvdServerRunner("http://h:1", context="y", tokens=store).credential().login_name == "y"


def test_login_is_not_needed_for_docker(cli: EnvdCli,
                                        register_plugin: Callable[..., str]) -> None:
    register_plugin(make_plugin(runners=[DockerRunner]))
    result = cli("login", "-u", "x", "-p", "y")
    assert result.exit_code == 0, result
    assert result.stderr_lines == ["login is not needed for docker runner, skipping"]


def test_login_to_an_unreachable_server_is_one_line(
        cli: EnvdCli, register_plugin: Callable[..., str], envd_config_dir: Path) -> None:
    register_plugin(make_plugin(builders=[StubBuilder], runners=[EnvdServerRunner]))
    created = cli("context", "create", "--name", "srv", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", "envd-server",
                  "--runner-address", "http://127.0.0.1:9", "--use")
    assert created.exit_code == 0, created
    (envd_config_dir / "id_rsa_envd").write_text("private")
    (envd_config_dir / "id_rsa_envd.pub").write_text("ssh-rsa AAAA test")
    result = cli("login", "-u", "u", "-p", "p")
    assert result.exit_code == 1, result
    assert result.stderr_lines == [
        "envd: cannot reach envd-server at `http://127.0.0.1:9`: Connection refused",
        ("hint: start the server or fix the runner address "
         "(envd context update --runner-address ...)"),
    ]
    assert cli("logout").stderr_lines == ["context srv holds no login"]


def test_what_the_api_cannot_express_is_refused_before_any_request(tmp_path: Path) -> None:
    from envd_core.environment import EnvironmentSpec, Mount, PortMapping

    runner = EnvdServerRunner("http://127.0.0.1:9", tokens=TokenStore(tmp_path))
    spec = EnvironmentSpec(name="e", image="i", mounts=(Mount("/a", "/b"),),
                           ports=(PortMapping(2222, host_ip="0.0.0.0", service="ssh"),))
    with pytest.raises(RunnerError) as info:
        runner.create(spec)  # the address answers nothing: no request was made
    assert info.value.message == (
        "environment `e`: envd-server cannot honour host mounts (use --sync, as upstream's "
        "envd-server runner does), another SSH host (--host): SSH goes through the server's "
        "gateway")


ADDRESSES = [
    None, "", "h:1", "http://h:1", "https://H.Example.ORG", "https://h:8443/prefix/",
    "tcp://10.0.0.1:8080", "envd-server://h:9", "http://[::1]:8080/x", "http://[fe80::1%eth0]:1",
    "http://h:99999", "http://h:x", "http://:80", "ftp://h:1", "http://u@h:1", "http://u:p@h:1",
    "http://@h:1", "http://h:1?q=1", "http://h:1#f", "http://[::1:80", "http://h:1/a b",
    "HTTP://h:1", "http://h:", "http://h:١٢", "http://h\t:1", "ht tp://h:1", "host:80://x",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_parse_address_is_urlsplits(address: str | None) -> None:
    """The hand-written split (urllib.parse costs a fifth of a cold envs ls) agrees with
    urllib.parse on every address here; only a bracket that does not pair differs (urlsplit
    raises a bare ValueError there, ours one line)."""
    from urllib.parse import urlsplit

    import envd_server_client.address as ours

    def reference() -> tuple[str, ...]:
        raw = (address or "").strip() or ours.DEFAULT_ADDRESS
        raw = raw.removeprefix("envd-server://")
        raw = raw if "://" in raw else f"http://{raw}"
        try:
            parts = urlsplit(raw)
        except ValueError:
            return ("error", "invalid host")
        if parts.scheme not in ("http", "https", "tcp"):
            return ("error", "must be")
        try:
            port = parts.port
        except ValueError:
            return ("error", "invalid port")
        if not parts.hostname:
            return ("error", "names no host")
        if parts.query or parts.fragment or parts.username:
            return ("error", "must not carry")
        default = 443 if parts.scheme == "https" else 80
        return (parts.scheme, parts.hostname, str(port or default), parts.path.rstrip("/"))

    try:
        got = ours.parse_address(address)
        mine: tuple[str, ...] = (got.scheme, got.host, str(got.port), got.prefix)
    except ValidationError as exc:
        word = next(w for w in ("invalid host", "must be", "invalid port", "names no host",
                                "must not carry") if w in str(exc))
        mine = ("error", word)
    assert mine == reference()


@pytest.mark.parametrize("text", ["a b/c", "x", "ü-ß~._", "%", "a%2", "100%", "/?#[]@!$&'()*+,;="])
def test_quote_and_unquote_are_urllibs(text: str) -> None:
    from urllib.parse import quote, unquote

    import envd_server_client.address as ours

    assert ours.quote(text) == quote(text, safe="")
    assert ours.unquote(text) == unquote(text)
    assert ours.unquote(ours.quote(text)) == text


def test_listed_ids_are_computed_only_when_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from envd_server_client import listing

    from envd_core.cli.render import environment_list

    made: list[str] = []
    real = listing.environment_id

    def counted(name: str, created_at: object) -> str:
        made.append(name)
        return real(name, created_at)

    monkeypatch.setattr(listing, "environment_id", counted)
    server = parse_address("http://127.0.0.1:8080")
    item = {"name": "dev", "spec": {"image": "busybox"}, "status": {"phase": "Running"},
            "created_at": 1796121570}
    envs = [listing.listed(item, server, 2222)]
    assert "dev.envd" in environment_list(envs, "table")
    assert made == []  # the table has no id column: nothing hashed
    expected = real("dev", 1796121570)
    assert f'"id":"{expected[:12]}"' in environment_list(envs, "json")
    assert envs[0].id == expected and made == ["dev"]  # computed once, then kept
