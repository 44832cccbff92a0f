"""Unit tests of how kube-pod reaches buildkitd: pod specs read as JSON, the TCP listener the
Deployment gets, the channel stream, refused upgrades, and one listing per build.

The channel stream is fed scripted WebSocket messages here (the framing of
``v5.channel.k8s.io`` and of port-forward); the real API server and kubelet speak to it in the
integration tests (``test_kube_pod_incluster.py``: port-forward; the seed test: exec).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from envd_kube_pod import KubePodBuilder
from envd_kube_pod.cluster import PodInfo, listen_port, pod_info
from envd_kube_pod.deploy import ROOTLESS_SOCKET, Settings, manifest
from envd_kube_pod.stream import ChannelStream, handshake_failure

from envd_core.errors import ValidationError
from envd_core.pipeline.early import EarlyConnection


def pod_json(name: str = "bk-1", *, ready: bool = True, args: list[str] | None = None,
             waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "buildkitd", "args": args or []}]},
            "status": {"phase": "Running" if ready else "Pending",
                       "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"state": state}]}}


def test_pod_info_reads_the_api_json() -> None:
    info = pod_info(pod_json(args=["--addr", "unix:///run/buildkit/buildkitd.sock",
                                   "--addr", "tcp://127.0.0.1:1234"]))
    assert info == PodInfo("bk-1", "Running", True, "", False, ("buildkitd",),
                           (("buildkitd", 1234),))
    assert info.tcp_port("buildkitd") == 1234 and info.tcp_port(None) == 1234
    assert info.tcp_port("other") is None
    waiting = pod_info(pod_json(ready=False, waiting="ImagePullBackOff"))
    assert (waiting.ready, waiting.reason, waiting.tcp_ports) == (False, "ImagePullBackOff", ())
    gone = pod_json()
    gone["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    assert pod_info(gone).ready is False and pod_info(gone).reason == "Terminating"


@pytest.mark.parametrize(("argv", "port"), [
    (["--addr", "tcp://0.0.0.0:1234"], 1234),
    (["--addr=tcp://127.0.0.1:9999", "--debug"], 9999),
    (["--addr", "unix:///run/buildkit/buildkitd.sock"], None),
    (["--addr", "tcp://0.0.0.0:1234", "--tlscert", "/certs/cert.pem"], None),
    (["--addr", "tcp://host:notaport"], None),
    ([], None),
])
def test_listen_port(argv: list[str], port: int | None) -> None:
    assert listen_port(argv) == port


def test_manifest_listener_and_rootless_environment() -> None:
    c = manifest("bk", "ci", Settings(image="i", tcp_port=1234))["spec"]["template"]["spec"][
        "containers"][0]
    assert c["args"] == ["--addr", "unix:///run/buildkit/buildkitd.sock",
                         "--addr", "tcp://127.0.0.1:1234"]
    assert "env" not in c
    r = manifest("bk", "ci", Settings(image="i", rootless=True, tcp_port=1234))["spec"][
        "template"]["spec"]["containers"][0]
    assert r["args"] == ["--oci-worker-no-process-sandbox", "--addr", f"unix://{ROOTLESS_SOCKET}",
                         "--addr", "tcp://127.0.0.1:1234"]
    assert {e["name"]: e["value"] for e in r["env"]} == {
        "USER": "user", "BUILDKIT_HOST": f"unix://{ROOTLESS_SOCKET}"}
    assert r["securityContext"]["seccompProfile"] == {"type": "Unconfined"}


@pytest.mark.parametrize(("opts", "port"), [
    ({}, 1234),                                              # auto: a loopback listener
    ({"port": "2000"}, 2000),
    ({"host-network": "true"}, None),                         # the node's ports: exec
    ({"host-network": "true", "transport": "port-forward", "port": "2001"}, 2001),
    ({"transport": "exec"}, None),
])
def test_which_deployments_listen_on_tcp(opts: dict[str, str], port: int | None) -> None:
    assert KubePodBuilder("deployment/bk", opts).settings().tcp_port == port


@pytest.mark.parametrize(("opts", "fragment"), [
    ({"transport": "ssh"}, "`transport` is `auto`, `exec` or `port-forward`"),
    ({"port": "70000"}, "must be a TCP port"),
])
def test_bad_transport_options(opts: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        KubePodBuilder.check_options(opts)
    assert fragment in info.value.message


class ScriptedWebSocket:
    """websocket-client's ``WebSocket`` surface ChannelStream uses, replaying messages."""

    def __init__(self, messages: list[bytes], subprotocol: str = "v5.channel.k8s.io") -> None:
        self._messages: Iterator[bytes] = iter(messages)
        self.subprotocol = subprotocol
        self.sent: list[bytes] = []
        self.closed = False

    def recv_data_frame(self, control_frame: bool) -> tuple[int, Any]:
        from websocket import ABNF

        data = next(self._messages, None)
        if data is None:
            return ABNF.OPCODE_CLOSE, type("F", (), {"data": b""})()
        return ABNF.OPCODE_BINARY, type("F", (), {"data": data})()

    def send(self, payload: bytes, opcode: int) -> None:
        self.sent.append(payload)

    def getheaders(self) -> dict[str, str]:
        return {}

    def close(self, timeout: float) -> None:
        self.closed = True


def test_exec_stream_splits_channels() -> None:
    status = json.dumps({"status": "Failure", "message": "command terminated"}).encode()
    ws = ScriptedWebSocket([b"\x01hello", b"\x02boom\n", b"\x01" + b"x" * 10, b"\x03" + status])
    s = ChannelStream(ws, data_out=0, data_in=1, errors=2)
    assert s.recv(100) == b"hello"
    assert s.recv(4) == b"xxxx"          # the rest of the message waits for the next recv
    assert s.recv(100) == b"xxxxxx"
    assert s.recv(100) == b""            # closed
    assert s.stderr == "boom\ncommand terminated"
    s.sendall(b"ping")
    s.shutdown_write()
    assert ws.sent == [b"\x00ping", b"\xff\x00"]  # data on stdin, then v5's close of stdin
    s.close()
    assert ws.closed


def test_v4_cannot_half_close() -> None:
    ws = ScriptedWebSocket([], subprotocol="v4.channel.k8s.io")
    ChannelStream(ws, data_out=0, data_in=1, errors=2).shutdown_write()
    assert ws.sent == []


def test_port_forward_stream_drops_the_port_prefix() -> None:
    # the first message on each channel is the port (1234 = 0x04d2, little-endian)
    ws = ScriptedWebSocket([b"\x00\xd2\x04", b"\x01\xd2\x04", b"\x00data", b"\x00more",
                            b"\x01refused"])
    s = ChannelStream(ws, data_out=0, data_in=0, errors=1, port_prefix=True)
    assert s.recv(100) == b"data"
    assert s.recv(100) == b"more"
    assert s.recv(100) == b""
    assert s.stderr == "refused"


def test_refused_upgrade_names_the_verb_the_server_checked() -> None:
    body = json.dumps({"kind": "Status", "message": 'pods "bk" is forbidden: User "u" cannot '
                       'get resource "pods/portforward" in API group "" in the namespace "ci"'})
    reason = (f"Handshake status 403 Forbidden -+-+- {{'audit-id': 'x'}} -+-+- "
              f"{body}\\n")
    err = handshake_failure(reason, "bk", "ci", "pods/portforward")
    assert err.message == ('RBAC forbids `get pods/portforward` on pod `bk` in namespace `ci`: '
                           'pods "bk" is forbidden: User "u" cannot get resource '
                           '"pods/portforward" in API group "" in the namespace "ci"')


class FakeCluster:
    """Counts the pod listings a builder makes (the API itself is in the integration tests)."""

    namespace = "ci"
    server = "https://k8s"

    def __init__(self, pods: list[PodInfo]) -> None:
        self.listed = 0
        self._pods = pods

    def pods(self, address: Any, *, keep_socket: bool = False) -> list[PodInfo]:
        self.listed += 1
        return self._pods

    def close(self) -> None:
        pass


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> tuple[KubePodBuilder, FakeCluster]:
    monkeypatch.setenv("ENVD_CONFIG_DIR", str(tmp_path))
    cluster = FakeCluster([PodInfo("bk-1", "Running", True)])
    b = KubePodBuilder("deployment/bk?namespace=ci", {})
    b.project = str(tmp_path)
    made: list[FakeCluster] = []
    monkeypatch.setattr(b, "cluster", lambda: made.append(cluster) or cluster)
    monkeypatch.setattr(b, "_open", lambda c, pod, timeout: ("conn", pod.name))
    return b, cluster


def test_one_listing_shared_by_needs_bootstrap_and_connect(
        counted: tuple[KubePodBuilder, FakeCluster]) -> None:
    b, cluster = counted
    assert b.needs_bootstrap() is False
    assert b.needs_bootstrap() is False      # the build path asks again: the same answer
    assert b.connect(timeout=5) == ("conn", "bk-1")
    assert cluster.listed == 1
    assert b.connect(timeout=5) == ("conn", "bk-1")  # a reconnect lists again
    assert cluster.listed == 2


def test_early_connection_leaves_a_bootstrap_to_the_build_path() -> None:
    class Missing:
        can_bootstrap = True
        connected = False

        def needs_bootstrap(self) -> bool:
            return True

        def connect(self, *, timeout: float) -> Any:
            self.connected = True

    builder = Missing()
    early = EarlyConnection(builder)  # type: ignore[arg-type]
    assert early.take() is None
    assert builder.connected is False


# -- which requests a build's pod listing makes -----------------------------------------------
def owned(pod: dict[str, Any], owner: str) -> dict[str, Any]:
    kind, name = owner.split("/")
    pod["metadata"]["ownerReferences"] = [{"kind": kind, "name": name, "controller": True}]
    return pod


class Recorded:
    """A Cluster whose API answers from a script, recording each request (path, query)."""

    def __init__(self, listing: list[dict[str, Any]], deployment: dict[str, Any] | None,
                 selector_listing: list[dict[str, Any]] | None = None) -> None:
        from envd_kube_pod.cluster import Cluster

        self.calls: list[tuple[str, str]] = []
        self.kept: list[bool] = []
        cluster = Cluster.__new__(Cluster)
        cluster.namespace, cluster.server = "ci", "https://k8s"

        def request(verb: str, resource: str, method: str, path: str, *,
                    query: Any = (), body: Any = None, content_type: Any = None,
                    keep_socket: bool = False) -> Any:
            selector = dict(query).get("labelSelector", "")
            self.calls.append((path.rsplit("/", 1)[-1], selector))
            self.kept.append(keep_socket)
            if resource == "deployments":
                if deployment is None:
                    from envd_core.errors import BuilderError, ErrorKind
                    raise BuilderError("deployments not found", kind=ErrorKind.NOT_FOUND)
                return deployment
            return {"items": listing if selector == "envd.io/builder=bk"
                    else (selector_listing or [])}

        cluster.request = request  # type: ignore[method-assign]
        self.cluster = cluster


def test_ready_envd_pods_are_found_by_label_in_one_request() -> None:
    from envd_kube_pod.address import parse_address

    rec = Recorded([owned(pod_json("bk-7f-b"), "ReplicaSet/bk-7f"),
                    owned(pod_json("bk-7f-a"), "ReplicaSet/bk-7f")], deployment=None)
    pods = rec.cluster.pods(parse_address("deployment/bk"))
    assert [p.name for p in pods] == ["bk-7f-a", "bk-7f-b"]
    assert pods[0].owner == "ReplicaSet/bk-7f"
    assert rec.calls == [("pods", "envd.io/builder=bk")]  # no Deployment read


def test_labelled_pods_of_another_controller_are_not_taken() -> None:
    """A pod carrying envd's label but controlled by something else (a copied label) is not
    routed to: the Deployment is read and its own selector listed."""
    from envd_kube_pod.address import parse_address

    rec = Recorded([owned(pod_json("impostor"), "ReplicaSet/other-1")],
                   deployment={"spec": {"selector": {"matchLabels": {"app": "bk"}}}},
                   selector_listing=[owned(pod_json("bk-1"), "ReplicaSet/bk-1")])
    pods = rec.cluster.pods(parse_address("deployment/bk"))
    assert [p.name for p in pods] == ["bk-1"]
    assert rec.calls == [("pods", "envd.io/builder=bk"), ("bk", ""), ("pods", "app=bk")]


@pytest.mark.parametrize("deployment", [None, {"spec": {"selector": {"matchLabels": {
    "envd.io/builder": "bk"}}}}])
def test_no_ready_pod_reads_the_deployment(deployment: dict[str, Any] | None) -> None:
    """Missing (bootstrap) or still starting: the listing falls back to the Deployment."""
    from envd_kube_pod.address import parse_address

    starting = [owned(pod_json("bk-1", ready=False, waiting="ContainerCreating"),
                      "ReplicaSet/bk-1")]
    rec = Recorded(starting, deployment=deployment)
    pods = rec.cluster.pods(parse_address("deployment/bk"))
    if deployment is None:
        assert pods == [] and rec.calls == [("pods", "envd.io/builder=bk"), ("bk", "")]
    else:
        assert [(p.name, p.reason) for p in pods] == [("bk-1", "ContainerCreating")]
        assert rec.calls == [("pods", "envd.io/builder=bk"), ("bk", ""),
                             ("pods", "envd.io/builder=bk")]


def test_only_a_listing_a_websocket_follows_keeps_its_connection() -> None:
    """The build's listing keeps its connection for the upgrade; bootstrap's polling (the
    default) leaves every connection in the client's pool, to be reused."""
    from envd_kube_pod.address import parse_address

    ready = [owned(pod_json("bk-1"), "ReplicaSet/bk-1")]
    rec = Recorded(ready, deployment=None)
    rec.cluster.pods(parse_address("deployment/bk"))
    rec.cluster.pods(parse_address("deployment/bk"), keep_socket=True)
    assert rec.kept == [False, True]
    starting = Recorded([], deployment={"spec": {"selector": {"matchLabels": {"a": "b"}}}},
                        selector_listing=ready)
    starting.cluster.pods(parse_address("deployment/bk"), keep_socket=True)
    assert starting.kept == [True, False, True]  # the Deployment read returns its connection


def test_an_old_spare_connection_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept longer than SPARE_IDLE (a build whose bootstrap check ran long before its
    connect), the listing's connection is closed, not upgraded: a load balancer may have
    dropped it without a word."""
    import socket

    from envd_kube_pod import cluster as cluster_module
    from envd_kube_pod.cluster import Cluster

    c = Cluster.__new__(Cluster)
    fresh, peer = socket.socketpair()
    c._spare, c._spare_at = fresh, cluster_module.time.monotonic()
    assert c.take_socket() is fresh and c.take_socket() is None  # once
    old, peer2 = socket.socketpair()
    c._spare, c._spare_at = old, cluster_module.time.monotonic() - cluster_module.SPARE_IDLE - 1
    assert c.take_socket() is None
    assert old.fileno() == -1  # closed
    for s in (fresh, peer, peer2):
        s.close()
