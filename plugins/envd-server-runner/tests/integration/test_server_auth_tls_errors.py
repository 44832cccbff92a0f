"""Login, JWT rules, TLS and every error's one line, against doubles of envd-server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from envd_server_client.tokens import Credential, TokenStore
from envd_server_double import EnvdServerDouble, make_jwt
from envd_server_double.pki import Pki, make_pki
from envd_server_double.support import BUSYBOX, logged_in, unique
from envd_server_runner import EnvdServerRunner

from envd_core.environment import EnvironmentSpec
from envd_core.errors import RunnerError
from envd_core.runner import EnvironmentExistsError, EnvironmentNotFoundError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "envd-h13-ca")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"), "envd-h13-other-ca")


def _spec(name: str | None = None) -> EnvironmentSpec:
    return EnvironmentSpec(name=name or unique(), image=BUSYBOX, command=("sleep", "60"))


# -- login and tokens ------------------------------------------------------------------------
def test_login_keeps_a_0600_token_and_uploads_the_key(
        double: EnvdServerDouble, tokens: TokenStore) -> None:
    runner = EnvdServerRunner(double.address, context="one", tokens=tokens)
    status = runner.login("one", username="alice", password=None, public_key="ssh-rsa AAAA k")
    assert status == "Login succeeded"
    path = tokens.path("one")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    credential = tokens.load("one")
    assert credential is not None and credential.login_name == "alice"
    assert credential.token not in repr(credential)
    assert double.keys[("alice", "default")] == "ssh-rsa AAAA k"
    # again: register and key upload answer 409 and are ignored; the token is replaced
    old = credential.token
    time.sleep(1.1)  # exp has second resolution: a later login gives a different token
    runner.login("one", username="alice", password=None, public_key="ssh-rsa AAAA k")
    again = tokens.load("one")
    assert again is not None and again.token != old
    assert runner.logout("one") is True and tokens.load("one") is None
    assert runner.logout("one") is False


def test_wrong_password(double: EnvdServerDouble, tokens: TokenStore) -> None:
    logged_in(double, tokens, user="bob", password="right")
    runner = EnvdServerRunner(double.address, context="two", tokens=tokens)
    with pytest.raises(RunnerError) as info:
        runner.login("two", username="bob", password="wrong")
    assert str(info.value) == (f"login as `bob` at envd-server `{double.address}` failed: "
                               "failed to login: wrong login name or password")
    assert tokens.load("two") is None  # the old state is untouched, nothing half-written


@pytest.mark.parametrize("forge", ["expired", "tampered", "other-secret", "bearer"])
def test_bad_tokens_are_refused_with_login_again(
        double: EnvdServerDouble, tokens: TokenStore, forge: str) -> None:
    runner = logged_in(double, tokens, user="carol")
    good = runner.credential().token
    token = {
        "expired": make_jwt("envd-server", "carol", time.time() - 5),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "other-secret": make_jwt("not-the-secret", "carol", time.time() + 60),
        "bearer": f"Bearer {good}",  # upstream's server reads the raw token only
    }[forge]
    tokens.save(Credential(context="ctx", address=double.address, login_name="carol",
                           token=token))
    with pytest.raises(RunnerError) as info:
        runner.list_environments()
    message = str(info.value)
    assert message.startswith(f"envd-server at `{double.address}` refused the request "
                              "(401 Unauthorized): invalid token: "), message
    assert info.value.hint == "log in again with `envd login`"
    assert token not in message


def test_another_users_environment_is_401(double: EnvdServerDouble, tokens: TokenStore) -> None:
    dave = logged_in(double, tokens, context="dave", user="dave")
    erin = logged_in(double, tokens, context="erin", user="erin")
    spec = _spec()
    dave.create(spec)
    for call in (lambda: erin.inspect(spec.name), lambda: erin.remove(spec.name)):
        with pytest.raises(RunnerError) as info:
            call()
        assert str(info.value) == (f"envd-server at `{double.address}` refused the request "
                                   "(401 Unauthorized): the environment belongs to another user")
    assert spec.name not in {e.name for e in erin.list_environments()}
    # a token for erin used on dave's URL: the username claim must equal :login_name
    client = erin.client(token=erin.credential().token)
    with pytest.raises(RunnerError, match="the token does not belong to this user"):
        client.request("GET", "/users/dave/environments")
    assert dave.inspect(spec.name).running


def test_two_contexts_on_two_servers_keep_separate_tokens(
        make_double: Callable[..., EnvdServerDouble], tokens: TokenStore) -> None:
    first, second = make_double(jwt_secret="secret-one"), make_double(jwt_secret="secret-two")
    a = logged_in(first, tokens, context="a", user="frank")
    b = logged_in(second, tokens, context="b", user="frank")
    assert a.credential().token != b.credential().token
    spec = _spec()
    a.create(spec)
    assert spec.name in {e.name for e in a.list_environments()}
    assert spec.name not in {e.name for e in b.list_environments()}
    # without a context, each server's runner finds its own token by address
    assert EnvdServerRunner(second.address, tokens=tokens).credential().context == "b"
    b.logout("b")
    assert a.inspect(spec.name).running
    with pytest.raises(RunnerError, match="not logged in to envd-server"):
        EnvdServerRunner(second.address, tokens=tokens).list_environments()


# -- TLS --------------------------------------------------------------------------------------
def test_tls_with_a_private_ca(make_double: Callable[..., EnvdServerDouble], pki: Pki,
                               tokens: TokenStore) -> None:
    double = make_double(tls=pki.server_context())
    runner = logged_in(double, tokens, options={"cacert": str(pki.ca)})
    assert runner.server.scheme == "https" and runner.list_environments() == []


def test_tls_with_the_wrong_ca_names_who_rejected_what(
        make_double: Callable[..., EnvdServerDouble], pki: Pki, other_pki: Pki,
        tokens: TokenStore) -> None:
    double = make_double(tls=pki.server_context())
    runner = EnvdServerRunner(double.address, {"cacert": str(other_pki.ca)}, tokens=tokens)
    with pytest.raises(RunnerError) as info:
        runner.login("x", username="u", password="p")
    assert str(info.value) == (
        f"TLS: envd rejected the certificate of envd-server `{double.address}`: unable to get "
        f"local issuer certificate (verified against {other_pki.ca}, from runner options)")
    # and with no cacert at all, the system store does not know the private CA either
    system = EnvdServerRunner(double.address, tokens=tokens)
    status = system.status()
    assert not status.reachable
    assert "(verified against the system trust store, from https address)" in str(status.error)


def test_server_requiring_a_client_certificate(
        make_double: Callable[..., EnvdServerDouble], pki: Pki, other_pki: Pki,
        tokens: TokenStore) -> None:
    double = make_double(tls=pki.server_context(require_client_cert=True))
    good = {"cacert": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    assert EnvdServerRunner(double.address, good, tokens=tokens).status().reachable
    foreign = {**good, "cert": str(other_pki.client_cert), "key": str(other_pki.client_key)}
    with pytest.raises(RunnerError) as info:
        EnvdServerRunner(double.address, foreign, tokens=tokens).client().request("GET", "/")
    assert str(info.value).startswith(
        f"TLS: envd-server `{double.address}` rejected envd's client certificate "
        f"`{other_pki.client_cert}` ("), str(info.value)
    with pytest.raises(RunnerError) as info:
        EnvdServerRunner(double.address, {"cacert": str(pki.ca)},
                         tokens=tokens).client().request("GET", "/")
    assert "it requires a client certificate and envd sent none" in str(info.value)


def test_upstreams_cert_path_variables(make_double: Callable[..., EnvdServerDouble], pki: Pki,
                                       tmp_path: Path, tokens: TokenStore,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    double = make_double(tls=pki.server_context(require_client_cert=True))
    certs = tmp_path / "certs"
    certs.mkdir()
    for src, dst in ((pki.ca, "ca.pem"), (pki.client_cert, "cert.pem"),
                     (pki.client_key, "key.pem")):
        (certs / dst).write_bytes(src.read_bytes())
    monkeypatch.setenv("ENVD_SERVER_CERT_PATH", str(certs))
    monkeypatch.setenv("ENVD_SERVER_TLS_VERIFY", "1")
    # as upstream: the variable turns TLS on even for an http:// (or tcp://) address
    plain = double.address.replace("https://", "http://")
    assert EnvdServerRunner(plain, tokens=tokens).status().reachable


# -- errors -----------------------------------------------------------------------------------
def test_conflict_and_not_found(double: EnvdServerDouble, tokens: TokenStore) -> None:
    runner = logged_in(double, tokens)
    spec = _spec()
    runner.create(spec)
    with pytest.raises(EnvironmentExistsError) as exists:
        runner.create(spec)
    assert str(exists.value) == (f"environment `{spec.name}` already exists on envd-server "
                                 f"`{double.address}`")
    # 409 from the server itself (a race: created between our check and our POST)
    client = runner.client(token=runner.credential().token)
    with pytest.raises(RunnerError) as info:
        client.request("POST", f"/users/{runner.credential().login_name}/environments",
                       runner._create_body(spec))
    assert str(info.value) == (f"envd-server at `{double.address}` reports a conflict (409): "
                               f'pods "{spec.name}" already exists')
    missing = unique()
    with pytest.raises(EnvironmentNotFoundError) as gone:
        runner.inspect(missing)
    assert str(gone.value) == (f"environment `{missing}` not found on envd-server "
                               f"`{double.address}`")


def test_unreachable_server(tokens: TokenStore) -> None:
    runner = EnvdServerRunner("http://127.0.0.1:9", tokens=tokens)
    with pytest.raises(RunnerError) as info:
        runner.login("x", username="u", password="p")
    assert str(info.value) == ("cannot reach envd-server at `http://127.0.0.1:9`: "
                               "Connection refused")
    assert not runner.status().reachable


def test_a_server_that_is_not_envd_server(not_envd_server: str, tokens: TokenStore) -> None:
    runner = EnvdServerRunner(not_envd_server, tokens=tokens)
    with pytest.raises(RunnerError) as info:
        runner.login("x", username="u", password="p")
    assert str(info.value) == (f"`{not_envd_server}` is not an envd-server: POST /login "
                               "answered 404 without envd-server's error JSON")


def test_plain_http_to_a_tls_server(make_double: Callable[..., EnvdServerDouble], pki: Pki,
                                     tokens: TokenStore) -> None:
    double = make_double(tls=pki.server_context())
    plain = double.address.replace("https://", "http://")
    with pytest.raises(RunnerError) as info:
        EnvdServerRunner(plain, tokens=tokens).login("x", username="u", password="p")
    assert str(info.value) == (f"`{plain}` closed the connection without an HTTP answer "
                               "(ConnectionResetError)")
    assert info.value.hint == "if the server speaks TLS, use an https:// runner address"
