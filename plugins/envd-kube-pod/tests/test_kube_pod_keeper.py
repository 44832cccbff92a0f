"""The forwarding keeper without a cluster: its key, its protocol, its process, the fallback.

The keeper processes here are real (spawned as a build spawns them) for contexts whose cluster
cannot be loaded, so every answer they give is the one-line error a direct build would raise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from envd_kube_pod import KubePodBuilder, Routed, keeper_client
from envd_kube_pod.cluster import PodInfo
from envd_kube_pod.keeper import Keeper, expiring_credentials

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import BuilderError, ErrorKind

ADDRESS = "deployment/bk?namespace=ci"


@pytest.fixture
def sockdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private socket directory; the keeper on; keepers started here stopped afterwards."""
    directory = tempfile_dir()
    monkeypatch.setenv("ENVD_RESIDENT_DIR", directory)
    monkeypatch.delenv("ENVD_KUBE_KEEPER", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("ENVD_KUBE_KEEPER_IDLE", "5")  # one a build started and nobody waited for
    yield directory
    # A build that found no keeper started one in the background; it may register only now.
    deadline = time.monotonic() + 15
    while locked(directory) and time.monotonic() < deadline:
        keeper_client.stop_all(directory, wait=2)
        time.sleep(0.2)
    assert not locked(directory), "a keeper of this test is still running"
    shutil.rmtree(directory, ignore_errors=True)


def locked(directory: str) -> bool:
    """Whether a keeper holds a lock file in ``directory`` (it runs, registered or not)."""
    import fcntl

    for lock in Path(directory).glob("*.lock"):
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
    return False


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="envd-kk-", dir="/tmp")  # AF_UNIX paths: 107 bytes


def test_key_covers_address_options_kubeconfig_content_and_environment(
        tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text('{"apiVersion": "v1"}')
    env = {"HOME": str(tmp_path)}
    opts = {"kubeconfig": str(config)}
    base = keeper_client.key(ADDRESS, opts, env)
    assert len(base) == 16 and base == keeper_client.key(ADDRESS, opts, env)
    assert keeper_client.key("deployment/other", opts, env) != base
    assert keeper_client.key(ADDRESS, {**opts, "transport": "exec"}, env) != base
    assert keeper_client.key(ADDRESS, opts, {**env, "HTTPS_PROXY": "http://p:3128"}) != base
    os.utime(config, (1, 1))  # rewritten unchanged (scripts/infra env does): same keeper
    assert keeper_client.key(ADDRESS, opts, env) == base
    config.write_text('{"apiVersion": "v1", "current-context": "b"}')
    assert keeper_client.key(ADDRESS, opts, env) != base
    # without the option, KUBECONFIG (several files) and then ~/.kube/config are read
    assert keeper_client.kubeconfig_files({}, {"KUBECONFIG": f"/a{os.pathsep}/b"}) == ["/a", "/b"]
    assert keeper_client.kubeconfig_files({}, env) == [str(tmp_path / ".kube" / "config")]


def test_switches() -> None:
    assert keeper_client.disabled({"ENVD_KUBE_KEEPER": "0"})
    assert keeper_client.disabled({"ENVD_KUBE_KEEPER": "off"})
    assert not keeper_client.disabled({})
    assert keeper_client.idle_seconds({"ENVD_KUBE_KEEPER_IDLE": "5"}) == 5.0
    assert keeper_client.idle_seconds({"ENVD_KUBE_KEEPER_IDLE": "x"}) == keeper_client.DEFAULT_IDLE
    assert keeper_client.idle_seconds({}) == keeper_client.DEFAULT_IDLE


def test_errors_cross_the_socket_unchanged() -> None:
    sent = BuildkitConnectionError("no pods ready", kind=ErrorKind.NOT_FOUND, hint="bootstrap")
    back = keeper_client.error_from(json.loads(json.dumps(keeper_client.error_reply(sent))))
    assert isinstance(back, BuildkitConnectionError)
    assert (back.message, back.kind, back.hint) == ("no pods ready", ErrorKind.NOT_FOUND,
                                                    "bootstrap")
    plain = keeper_client.error_from(keeper_client.error_reply(
        BuilderError("RBAC forbids `list pods`", hint="ask")))
    assert type(plain) is BuilderError and plain.kind == ErrorKind.UNAVAILABLE
    assert keeper_client.error_from({"message": "x", "kind": "no-such-kind"}) is None
    assert keeper_client.error_from("garbage") is None
    odd = keeper_client.error_reply(RuntimeError("boom"))
    assert "RuntimeError: boom" in odd["message"] and "ENVD_KUBE_KEEPER=0" in odd["hint"]


def test_a_route_answer_becomes_pods_and_sockets() -> None:
    pod = {"name": "bk-1", "phase": "Running", "ready": True, "reason": "",
           "terminating": False, "containers": ["buildkitd"],
           "tcp_ports": [["buildkitd", 1234]], "owner": "ReplicaSet/bk-5"}
    routed = Routed.from_reply(json.loads(json.dumps({
        "server": "https://k:6443", "namespace": "ci", "pods": [pod],
        "sockets": {"bk-1": "/tmp/x.sock"}})))
    assert routed is not None and routed.sockets == {"bk-1": "/tmp/x.sock"}
    assert routed.pods == [PodInfo(name="bk-1", phase="Running", ready=True,
                                   containers=("buildkitd",),
                                   tcp_ports=(("buildkitd", 1234),), owner="ReplicaSet/bk-5")]
    assert Routed.from_reply({"server": "s", "namespace": "n", "pods": [{}],
                              "sockets": {}}) is None
    assert Routed.from_reply({"direct": "exec credentials"}) is None


def test_a_keeper_answers_with_the_error_a_direct_build_raises(sockdir: str) -> None:
    b = KubePodBuilder(ADDRESS, {})
    sock = keeper_client.start(b.address, b.option_values, os.environ, wait=60)
    assert sock is not None, Path(sockdir, "kube-keeper.log").read_text()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sockdir).st_mode) == 0o700
    [info] = keeper_client.keepers(sockdir)
    assert info["socket"] == sock and info["address"] == f"kube-pod://{ADDRESS}"

    with pytest.raises(BuildkitConnectionError) as kept:
        b.connect(timeout=5)
    os.environ["ENVD_KUBE_KEEPER"] = "0"
    try:
        with pytest.raises(BuildkitConnectionError) as direct:
            KubePodBuilder(ADDRESS, {}).connect(timeout=5)
    finally:
        del os.environ["ENVD_KUBE_KEEPER"]
    assert kept.value.message == direct.value.message
    assert kept.value.message.startswith("no cluster: no kubeconfig at")
    assert (kept.value.kind, kept.value.hint) == (direct.value.kind, direct.value.hint)
    state = keeper_client.ask(sock, {"op": "status"}, timeout=5)
    assert state is not None and state["routes"] >= 1 and state["pid"] == info["pid"]

    # One keeper per key: a second one started for it exits at once (the lock).
    keeper_client.spawn(sockdir, sock.rsplit("-", 1)[1][:-5], b.address, b.option_values)
    time.sleep(1.5)
    assert [k["pid"] for k in keeper_client.keepers(sockdir)] == [info["pid"]]

    assert keeper_client.stop_all(sockdir) == [info["pid"]]
    assert not Path(sock).exists() and keeper_client.keepers(sockdir) == []


def test_a_starting_keeper_removes_the_files_of_killed_ones(sockdir: str) -> None:
    import fcntl

    dead = Path(sockdir, "kube-keeper-dead000000000001")
    for suffix in (".lock", ".sock", ".helper.json"):  # a SIGKILLed keeper's three files
        Path(f"{dead}{suffix}").write_text("")
    held = Path(sockdir, "kube-keeper-live000000000002")
    fd = os.open(f"{held}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live (or starting) keeper's
    Path(f"{held}.sock").write_text("")
    resident = Path(sockdir, "resident-dead000000000003.lock")  # not a keeper's to remove
    resident.write_text("")
    try:
        b = KubePodBuilder(ADDRESS, {})
        sock = keeper_client.start(b.address, b.option_values, os.environ, wait=60)
        assert sock is not None, Path(sockdir, "kube-keeper.log").read_text()
    finally:
        os.close(fd)
    names = {p.name for p in Path(sockdir).iterdir()}
    assert not any(n.startswith(dead.name) for n in names), names
    assert {f"{held.name}.lock", f"{held.name}.sock", resident.name} <= names
    log = Path(sockdir, "kube-keeper.log").read_text()
    assert "removed the files of 1 keeper that had not stopped cleanly" in log


def serve_once(path: str, answer: bytes) -> threading.Thread:
    """A fake keeper on ``path`` that answers every request with ``answer``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.settimeout(10)

    def run() -> None:
        with listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("answer", "miss"), [
    (b"garbage\n", "the keeper's answer is not one: b'garbage"),
    (b"[1, 2]\n", "the keeper's answer is not one: b'[1, 2]"),
    (b'{"error": {"message": 3}}\n', "the keeper's answer is not one"),
    # pods ready, but the bridged socket is not there (the keeper died after answering)
    (json.dumps({"server": "s", "namespace": "ci", "sockets": {"bk-1": "/tmp/envd-kk-none"},
                 "pods": [{"name": "bk-1", "phase": "Running", "ready": True}]}).encode()
     + b"\n", "the keeper's bridge to `bk-1` did not answer: "),
])
def test_a_keeper_that_answers_garbage_leaves_the_build_to_the_direct_path(
        sockdir: str, answer: bytes, miss: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_DEBUG", "1")
    b = KubePodBuilder(ADDRESS, {})
    sock = keeper_client.paths(sockdir, keeper_client.key(b.address, b.option_values,
                                                          os.environ))[0]
    thread = serve_once(sock, answer)
    with pytest.raises(BuildkitConnectionError) as info:
        b.connect(timeout=5)
    thread.join(5)
    assert info.value.message.startswith("no cluster: no kubeconfig at")  # the direct path's
    assert not b.via_keeper
    assert b.keeper_miss is not None and b.keeper_miss.startswith(miss), b.keeper_miss
    assert f"debug: kube-pod: not through the keeper: {miss}" in capsys.readouterr().err


def test_a_bridge_that_fails_once_is_tried_again_through_the_keeper(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream the pod closed before answering (kube-keeper.log says why) costs one more
    route, not the direct path."""
    import envd_kube_pod

    pod = PodInfo(name="bk-1", phase="Running", ready=True)
    routed = Routed("s", "ci", [pod], {"bk-1": "/tmp/envd-kk-none"})
    routes: list[str] = []
    attempts: list[str] = []
    sentinel = object()

    def route(builder: KubePodBuilder, timeout: float = 25.0) -> Routed:
        routes.append(builder.address)
        return routed

    def open_kept(r: Routed, p: PodInfo, timeout: float) -> object:
        attempts.append(p.name)
        return "the keeper's bridge to `bk-1` did not answer: Socket closed" \
            if len(attempts) == 1 else sentinel

    monkeypatch.setattr(envd_kube_pod, "keeper_route", route)
    monkeypatch.setattr(envd_kube_pod, "open_kept", open_kept)
    b = KubePodBuilder(ADDRESS, {})
    assert b.connect(timeout=5) is sentinel
    assert b.via_keeper and b.last_pod == "bk-1"
    assert len(routes) == 2 and attempts == ["bk-1", "bk-1"]
    # why the first try failed is kept (kube-keeper.log has the pod's side)
    assert b.keeper_miss == "the keeper's bridge to `bk-1` did not answer: Socket closed"


def test_contexts_with_expiring_credentials_stay_direct(tmp_path: Path) -> None:
    def kubeconfig(user: dict[str, object]) -> str:
        path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}"
        path.write_text(json.dumps({
            "current-context": "c", "contexts": [{"name": "c",
                                                  "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": "https://k:6443"}}],
            "users": [{"name": "u", "user": user}]}))
        return str(path)

    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}
    reason = expiring_credentials(KubePodBuilder(ADDRESS, {"kubeconfig": kubeconfig(exec_user)}))
    assert reason == "the kubeconfig user `u` uses `exec` credentials"
    assert expiring_credentials(KubePodBuilder(ADDRESS, {"kubeconfig": kubeconfig(
        {"auth-provider": {"name": "oidc"}})})) is not None
    static = KubePodBuilder(ADDRESS, {"kubeconfig": kubeconfig({"token": "t"})})
    assert expiring_credentials(static) is None
    keeper = Keeper(str(tmp_path), "0" * 16, {"address": ADDRESS,
                                               "options": {"kubeconfig": kubeconfig(exec_user)}})
    keeper.direct = expiring_credentials(keeper.builder)
    assert keeper.answer("route") == {"direct": reason}
    assert keeper.answer("nonsense")["error"]["kind"] == "usage"


class _FakeStream:
    """A WebSocket stream: ``replies`` come back one per ``recv``; ``dead`` ends at once."""

    def __init__(self, replies: list[bytes], dead: bool = False) -> None:
        self.replies, self.dead, self.sent, self.closed = list(replies), dead, bytearray(), False

    def recv(self, n: int) -> bytes:
        if self.dead or not self.replies:
            return b""
        return self.replies.pop(0)

    def sendall(self, data: bytes) -> None:
        if self.dead and self.closed:
            raise OSError("stream to the pod closed")
        self.sent += data

    def close(self) -> None:
        self.closed = True


class _Releases:
    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, name: str | None = None) -> None:
        self.released.append(str(name))


#: What buildkitd v0.18.2 (grpc-go) sends the moment it accepts: its SETTINGS frame (read off
#: the infra's daemon), and frames that only come in answer to the build's own.
SETTINGS = bytes.fromhex("000006040000000000000500004000")
ACK = bytes.fromhex("000000040100000000")
HEADERS = bytes.fromhex("000003010400000001") + b"abc"


def test_preface_length_finds_the_servers_first_settings() -> None:
    from envd_kube_pod.keeper_stream import preface_length

    assert preface_length(SETTINGS) == 15 and preface_length(SETTINGS + ACK) == 15
    assert preface_length(SETTINGS[:8]) is None
    assert preface_length(ACK) == 0 and preface_length(HEADERS) == 0


def test_a_dead_spare_is_dialled_again_and_what_the_build_sent_is_replayed() -> None:
    from envd_kube_pod.keeper_stream import Counted

    dead, fresh = _FakeStream([], dead=True), _FakeStream([SETTINGS, ACK])
    keeper = _Releases()
    counted = Counted(dead, keeper, "bk-1", lambda: fresh)  # type: ignore[arg-type]
    counted.sendall(b"PRI * HTTP/2.0")
    assert counted.recv(100) == SETTINGS  # the dead spare's end is not the build's
    assert dead.closed and bytes(fresh.sent) == b"PRI * HTTP/2.0"
    counted.sendall(b"frame")
    assert bytes(fresh.sent) == b"PRI * HTTP/2.0frame"
    assert counted.recv(100) == ACK
    assert counted.recv(100) == b""  # after the pod answered, an end is the build's to see
    counted.close()
    assert fresh.closed and keeper.released == ["bk-1"]


def test_a_spare_that_only_passed_on_its_settings_is_still_dialled_again() -> None:
    """The SETTINGS a spare holds were sent when it opened: they prove nothing (CI: a spare
    passed them on and ended, and the build went direct). The new stream's same SETTINGS
    are not passed on twice; what the build sent (its ACK of them) is replayed."""
    from envd_kube_pod.keeper_stream import Counted

    stale = _FakeStream([SETTINGS[:6], SETTINGS[6:]])  # then the end
    fresh = _FakeStream([SETTINGS[:4], SETTINGS[4:] + ACK, HEADERS])
    counted = Counted(stale, _Releases(), "bk-1", lambda: fresh)  # type: ignore[arg-type]
    assert counted.recv(100) + counted.recv(100) == SETTINGS
    counted.sendall(b"PRI" + ACK)
    assert counted.recv(100) == ACK  # the new server's SETTINGS: skipped, read to their end
    assert stale.closed and bytes(fresh.sent) == b"PRI" + ACK
    assert counted.recv(100) == HEADERS
    assert counted.recv(100) == b""

    other = _FakeStream([bytes.fromhex("000000040000000000"), HEADERS])  # other SETTINGS
    counted = Counted(_FakeStream([SETTINGS]), _Releases(), "bk-1",  # type: ignore[arg-type]
                      lambda: other)
    assert counted.recv(100) == SETTINGS
    assert counted.recv(100) == bytes.fromhex("000000040000000000")  # passed on: not the same


def test_a_stream_that_answered_or_was_dialled_fresh_is_not_dialled_again() -> None:
    from envd_kube_pod.keeper_stream import Counted

    dialled: list[int] = []
    live = _FakeStream([SETTINGS + ACK])
    counted = Counted(live, _Releases(), "bk-1",  # type: ignore[arg-type]
                      lambda: dialled.append(1) or _FakeStream([b"x"]))
    assert counted.recv(100) == SETTINGS + ACK
    assert counted.recv(100) == b"" and dialled == []
    fresh = Counted(_FakeStream([], dead=True), _Releases(), "bk-1")  # type: ignore[arg-type]
    assert fresh.recv(100) == b""  # opened for this build: nothing to retry


def test_a_send_on_a_dead_spare_goes_to_a_fresh_stream() -> None:
    from envd_kube_pod.keeper_stream import Counted

    dead, fresh = _FakeStream([], dead=True), _FakeStream([SETTINGS])
    dead.closed = True  # its sends fail at once
    counted = Counted(dead, _Releases(), "bk-1", lambda: fresh)  # type: ignore[arg-type]
    counted.sendall(b"PRI * HTTP/2.0")
    assert bytes(fresh.sent) == b"PRI * HTTP/2.0"
    assert counted.recv(100) == SETTINGS  # nothing passed on before: nothing to skip
    gone = Counted(_FakeStream([], dead=True), _Releases(), "bk-1")  # type: ignore[arg-type]
    gone._stream.closed = True  # type: ignore[attr-defined]
    with pytest.raises(OSError):
        gone.sendall(b"x")  # opened for this build: its failure is the build's
