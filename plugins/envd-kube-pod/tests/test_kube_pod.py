"""Unit tests of the kube-pod builder: addresses, routing, error lines, the manifest.

No cluster here: these cover the pure parts. The cluster tests are in ``tests/integration``.
"""

from __future__ import annotations

import collections
import json
import types
from pathlib import Path

import pytest
from envd_kube_pod import DEFAULT_IMAGE, KubePodBuilder
from envd_kube_pod.address import Address, parse_address
from envd_kube_pod.deploy import (
    HASH_ANNOTATION,
    Settings,
    manifest,
    parse_resources,
    parse_tolerations,
)
from envd_kube_pod.errors import api_error, no_cluster, status_message
from envd_kube_pod.routing import pick, remember
from envd_kube_pod.stream import handshake_failure

from envd_core.errors import BuilderError, ErrorKind, ValidationError
from envd_core.testing import BuilderContract


class TestKubePodContract(BuilderContract):
    builder_cls = KubePodBuilder
    valid_address = "deployment/envd-buildkitd"


# -- addresses ----------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "want"), [
    ("buildkitd-0", Address("pod", "buildkitd-0")),
    ("buildkitd-0?namespace=ci&context=prod&container=bk",
     Address("pod", "buildkitd-0", "ci", "prod", "bk")),
    ("pod/buildkitd-0", Address("pod", "buildkitd-0")),
    ("deployment/envd-buildkitd?namespace=ci", Address("deployment", "envd-buildkitd", "ci")),
    ("selector/app=buildkitd,tier!=canary", Address("selector", "app=buildkitd,tier!=canary")),
    ("selector/env in (a,b),app", Address("selector", "env in (a,b),app")),
])
def test_parse_address(raw: str, want: Address) -> None:
    assert parse_address(raw) == want


@pytest.mark.parametrize(("raw", "stored"), [
    ("kube-pod://buildkitd-0?namespace=ci", "buildkitd-0?namespace=ci"),  # upstream's, as is
    ("pod/buildkitd-0", "buildkitd-0"),
    ("kube-pod://deployment/bk?container=c&namespace=n", "deployment/bk?namespace=n&container=c"),
])
def test_normalize_keeps_upstream_form(raw: str, stored: str) -> None:
    assert KubePodBuilder.normalize_address(raw) == stored


@pytest.mark.parametrize(("raw", "fragment"), [
    ("Upper", "not a valid pod name"),
    ("daemonset/x", "not a kube-pod address kind"),
    ("x?ns=a", "do not take `?ns=`"),
    ("x?namespace", "bad query"),
    ("x?namespace=Bad_NS", "not a valid namespace"),
    ("selector/a,,b", "not a label selector"),
    ("selector/a=b=c", "not a label selector"),
    ("tcp://host:1", "does not take"),
])
def test_bad_addresses_are_one_line(raw: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        KubePodBuilder.normalize_address(raw)
    assert fragment in info.value.message and "\n" not in info.value.message


# -- routing ------------------------------------------------------------------------------
def test_pick_is_stable_and_spreads() -> None:
    pods = [f"bk-{i}" for i in range(4)]
    projects = [f"/home/u/project-{i}" for i in range(400)]
    first = {p: pick(p, pods) for p in projects}
    assert first == {p: pick(p, list(reversed(pods))) for p in projects}  # order-free
    counts = collections.Counter(first.values())
    assert set(counts) == set(pods) and min(counts.values()) > 50  # no pod starves


def test_pick_moves_only_the_projects_of_a_removed_pod() -> None:
    pods = ["bk-a", "bk-b", "bk-c"]
    projects = [f"/src/p{i}" for i in range(300)]
    before = {p: pick(p, pods) for p in projects}
    after = {p: pick(p, ["bk-a", "bk-c"]) for p in projects}
    moved = {p for p in projects if before[p] != after[p]}
    assert moved == {p for p in projects if before[p] == "bk-b"}


def test_pick_without_pods() -> None:
    with pytest.raises(ValueError):
        pick("/p", [])


def test_remember_reports_the_previous_pod(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    assert remember("ctx|/p", "bk-a", routes) is None
    assert remember("ctx|/p", "bk-a", routes) is None  # unchanged: no notice
    assert remember("ctx|/p", "bk-b", routes) == "bk-a"
    assert json.loads(routes.read_text()) == {"ctx|/p": "bk-b"}
    routes.write_text("{corrupt")
    assert remember("ctx|/p", "bk-c", routes) is None  # a lost memory costs one notice


# -- error lines --------------------------------------------------------------------------
class FakeApiException(Exception):
    """The shape of kubernetes.client.ApiException (status, reason, body)."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"({status})")
        self.status, self.reason = status, "Forbidden"
        self.body = json.dumps(body) if isinstance(body, dict) else body


def test_forbidden_names_verb_resource_and_namespace() -> None:
    exc = FakeApiException(403, {"kind": "Status", "message": 'pods is forbidden: User '
                                 '"envd-restricted" cannot list resource "pods" in API group '
                                 '"" in the namespace "ci"', "reason": "Forbidden"})
    err = api_error(exc, verb="list", resource="pods", namespace="ci", server="https://k:6443")
    assert err.message.startswith("RBAC forbids `list pods` in namespace `ci`")
    assert "envd-restricted" in err.message and "\n" not in err.message


def test_other_statuses() -> None:
    nf = api_error(FakeApiException(404, {"message": 'deployments "x" not found'}),
                   verb="get", resource="deployments", namespace="n")
    assert nf.kind == ErrorKind.NOT_FOUND and 'deployments "x" not found' in nf.message
    unauth = api_error(FakeApiException(401, "Unauthorized"), verb="get", resource="pods",
                       namespace="n", server="https://k:6443")
    assert "rejected the credentials" in unauth.message


@pytest.mark.parametrize(("text", "kind"), [
    (("HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Caused by "
      "NewConnectionError(': Failed to establish a new connection: [Errno 111] Connection "
      "refused'))"), ErrorKind.REFUSED),
    ("Failed to resolve 'nohost.invalid' ([Errno -2] Name or service not known)", ErrorKind.DNS),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", ErrorKind.TLS),
    ("Read timed out. (read timeout=20)", ErrorKind.TIMEOUT),
])
def test_no_cluster_lines(text: str, kind: ErrorKind) -> None:
    err = no_cluster(OSError(text), "https://127.0.0.1:1")
    assert err.kind == kind
    assert err.message.startswith("no cluster: cannot reach the Kubernetes API at "
                                  "https://127.0.0.1:1 (")


def test_status_message_forms() -> None:
    assert status_message(b'{"message": "m"}') == "m"
    assert status_message("plain text\nmore") == "plain text"
    assert status_message(None) == ""


def test_exec_handshake_refusals() -> None:
    body = json.dumps({"kind": "Status", "message": 'pods "bk" is forbidden: User "u" cannot '
                       'create resource "pods/exec"'})
    forbidden = handshake_failure(f"Handshake status 403 Forbidden -+-+- {{}} -+-+- "
                                  f"b'{body}'", "bk", "ci")
    assert forbidden.message.startswith("RBAC forbids `create pods/exec` on pod `bk`")
    refused = handshake_failure("Handshake status 400 Bad Request", "bk", "ci")
    assert isinstance(refused, BuilderError)
    assert refused.message == ("exec into pod `bk` (namespace `ci`) refused: HTTP 400: "
                               "Handshake status 400 Bad Request")


# -- the Deployment -----------------------------------------------------------------------
def test_manifest_privileged_and_labelled() -> None:
    dep = manifest("bk", "ci", Settings(image=DEFAULT_IMAGE, replicas=2))
    pod = dep["spec"]["template"]["spec"]
    assert dep["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "envd",
                                         "envd.io/builder": "bk"}
    assert dep["spec"]["selector"] == {"matchLabels": {"envd.io/builder": "bk"}}
    assert dep["spec"]["replicas"] == 2
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    assert pod["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod


def test_manifest_options_and_hash() -> None:
    requests, limits = parse_resources("cpu=1,memory=2Gi,limits.memory=4Gi")
    s = Settings(image="img", rootless=True, host_network=True, requests=requests,
                 limits=limits, node_selector={"pool": "build"},
                 tolerations=parse_tolerations("dedicated=build:NoSchedule,gpu"),
                 service_account="builder", buildkitd_flags=("--debug",))
    dep = manifest("bk", "ci", s)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["--oci-worker-no-process-sandbox", "--debug"]
    assert c["securityContext"]["runAsUser"] == 1000
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                              "limits": {"memory": "4Gi"}}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "build", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"}]
    assert pod["serviceAccountName"] == "builder" and pod["hostNetwork"] is True
    same = manifest("bk", "ci", s)["metadata"]["annotations"][HASH_ANNOTATION]
    assert same == dep["metadata"]["annotations"][HASH_ANNOTATION]
    # Replicas are scaled in place: they are not part of the template hash.
    other = manifest("bk", "ci", Settings(image="img2"))["metadata"]["annotations"]
    assert other[HASH_ANNOTATION] != same
    scaled = manifest("bk", "ci", attrs_evolve(s, replicas=5))["metadata"]["annotations"]
    assert scaled[HASH_ANNOTATION] == same


def attrs_evolve(s: Settings, **changes: object) -> Settings:
    import attrs

    return attrs.evolve(s, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("opts", "fragment"), [
    ({"resources": "cpu"}, "`cpu` in resources is not key=value"),
    ({"tolerations": "k=v:Sometimes"}, "`k=v:Sometimes` is not a toleration"),
    ({"node-selector": "=x"}, "in node-selector is not key=value"),
    ({"replicas": "0"}, "at least 1"),
])
def test_bad_options(opts: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        KubePodBuilder.check_options(opts)
    assert fragment in info.value.message


def test_rootless_default_image_switches_to_the_rootless_variant() -> None:
    b = KubePodBuilder("deployment/bk", {"rootless": "true"})
    assert b.settings().image == DEFAULT_IMAGE + "-rootless"
    b = KubePodBuilder("deployment/bk", {"rootless": "true", "image": "r/bk:1"})
    assert b.settings().image == "r/bk:1"


def test_pod_address_bootstraps_nothing() -> None:
    b = KubePodBuilder("buildkitd-0")
    assert b.needs_bootstrap() is False
    assert b.bootstrap().action.value == "none"
    assert b.remove().action.value == "absent"


def test_no_kubeconfig_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    status = KubePodBuilder("deployment/bk").status(timeout=1)
    assert not status.reachable and status.error_kind == ErrorKind.NOT_FOUND
    assert status.error == (f"no cluster: no kubeconfig at `{tmp_path / 'missing'}` and not "
                            "running inside a pod")


def test_unreachable_cluster_is_one_line(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(config))
    status = KubePodBuilder("deployment/bk").status(timeout=1)
    assert status.error_kind == ErrorKind.REFUSED, status
    assert status.error == (f"no cluster: cannot reach the Kubernetes API at "
                            f"https://127.0.0.1:{port} (connection refused)")


def test_module_is_light() -> None:
    import envd_kube_pod

    assert isinstance(envd_kube_pod, types.ModuleType)
    # Importing the plugin (what `envd context ls` does) must not import the client.
    import subprocess
    import sys

    code = ("import sys, envd_kube_pod; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('kubernetes', 'grpc', 'urllib3', 'websocket')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
