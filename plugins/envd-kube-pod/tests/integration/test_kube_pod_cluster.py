"""kube-pod on the real cluster: bootstrap, routing across replicas, remove, the error lines.

Every test runs in a namespace of its own on the single-node Kubernetes v1.31 of
``scripts/infra up --kube``; BuildKit is the infra's moby/buildkit image from the local
registry, in privileged pods on the node's network.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from envd_kube_pod import KubePodBuilder, routing

from envd_core.builder import DaemonAction
from envd_core.buildkit.client import probe
from envd_core.errors import BuilderError, ErrorKind


def builder(namespace: str, options: dict[str, str], name: str = "bk",
            **extra: str) -> KubePodBuilder:
    address = KubePodBuilder.normalize_address(f"deployment/{name}?namespace={namespace}")
    return KubePodBuilder(address, {**options, **extra})


def apps(kube_api: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(kube_api)


def core(kube_api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(kube_api)


def test_bootstrap_is_idempotent_and_status_shows_pods(namespace: str, kube_api: Any,
                                                      kube_options: dict[str, str]) -> None:
    b = builder(namespace, kube_options)
    assert b.needs_bootstrap() is True
    lines: list[str] = []
    first = b.bootstrap(report=lines.append)
    assert first.action is DaemonAction.CREATED, first
    assert any(line.startswith("creating deployment") for line in lines), lines
    assert any(line == "pods ready: 1/1" for line in lines), lines
    dep = apps(kube_api).read_namespaced_deployment("bk", namespace)
    before = (dep.metadata.resource_version, dep.metadata.generation)
    assert b.needs_bootstrap() is False

    again = b.bootstrap()
    assert again.action is DaemonAction.REUSED, again
    dep = apps(kube_api).read_namespaced_deployment("bk", namespace)
    assert (dep.metadata.resource_version, dep.metadata.generation) == before  # no write

    status = b.status(timeout=30)
    assert status.reachable, status
    pod = core(kube_api).list_namespaced_pod(namespace).items[0].metadata.name
    assert status.version == f"v0.18.2; 1/1 pods ready ({pod}: v0.18.2)"
    assert status.workers >= 1 and "linux/amd64" in status.platforms

    # Another image is a different pod template: reported stale, changed only with force.
    stale = builder(namespace, kube_options, image=kube_options["image"] + "-nope")
    kept = stale.bootstrap()
    assert kept.action is DaemonAction.REUSED and "stale" in kept.detail
    assert apps(kube_api).read_namespaced_deployment("bk", namespace).metadata.generation \
        == before[1]


def one_project_per_pod(pods: list[str]) -> dict[str, str]:
    """A project path that routing sends to each of ``pods`` (six fixed projects all landed
    on one of two pods in a CI run: a 1-in-32 draw of the pod names)."""
    found: dict[str, str] = {}
    for i in range(256):
        found.setdefault(routing.pick(f"/src/project-{i}", pods), f"/src/project-{i}")
    assert sorted(found) == sorted(pods), found
    return found


def test_routing_sticks_to_a_pod_and_moves_with_a_notice(
        namespace: str, kube_api: Any, kube_options: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    b = builder(namespace, kube_options, replicas="2")
    assert b.bootstrap().action is DaemonAction.CREATED
    pods = sorted(p.metadata.name for p in core(kube_api).list_namespaced_pod(namespace).items)
    assert len(pods) == 2

    def build_on(project: str) -> str:
        b.project = project
        conn = b.connect(timeout=60)  # ListWorkers answered through the exec'd dial-stdio
        try:
            assert probe(conn, timeout=30)["version"] == "v0.18.2"
        finally:
            conn.close()
        assert b.last_pod is not None
        return b.last_pod

    # One project per pod: each build lands where rendezvous hashing says.
    chosen = one_project_per_pod(pods)
    assert {project: build_on(project) for project in chosen.values()} == \
        {project: pod for pod, project in chosen.items()}
    pod, project = next(iter(chosen.items()))
    assert all(build_on(project) == pod for _ in range(3))  # sticky
    assert b.last_notice is None

    core(kube_api).delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    capsys.readouterr()
    moved = build_on(project)
    assert moved != pod
    assert b.last_notice is not None and f"pod `{pod}`" in b.last_notice
    assert f"building on `{moved}`" in b.last_notice
    assert f"notice: kube-pod: pod `{pod}`" in capsys.readouterr().err


def test_remove_deletes_only_what_envd_created(namespace: str, kube_api: Any,
                                               kube_options: dict[str, str]) -> None:
    ours = builder(namespace, kube_options)
    assert ours.bootstrap().action is DaemonAction.CREATED
    # A Deployment someone else made, with a similar shape but without envd's labels.
    foreign = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "theirs", "labels": {"envd.io/builder": "theirs"}},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                        "template": {"metadata": {"labels": {"app": "theirs"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    apps(kube_api).create_namespaced_deployment(namespace, foreign)

    theirs = builder(namespace, kube_options, name="theirs")
    with pytest.raises(BuilderError) as info:
        theirs.bootstrap()
    assert info.value.kind == ErrorKind.CONFLICT
    assert "was not created by envd" in info.value.message
    assert theirs.remove().action is DaemonAction.ABSENT

    lines: list[str] = []
    gone = ours.remove(report=lines.append)
    assert gone.action is DaemonAction.REMOVED
    assert gone.detail == f"deployment {namespace}/bk"
    names = [d.metadata.name for d in apps(kube_api).list_namespaced_deployment(namespace).items]
    assert names == ["theirs"]
    assert ours.remove().action is DaemonAction.ABSENT


def restricted(kube: dict[str, Any], kube_api: Any, namespace: str,
               rules: list[dict[str, Any]]) -> str:
    """Bind a Role with ``rules`` to the infra's restricted user; its kubeconfig."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "envd-test"}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "envd-test"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "envd-test"},
        "subjects": [{"kind": "User", "name": "envd-restricted",
                      "apiGroup": "rbac.authorization.k8s.io"}]})
    return str(kube["KUBE_RESTRICTED_KUBECONFIG"])


def test_rbac_and_readiness_errors_are_one_line(namespace: str, kube: dict[str, Any],
                                                kube_api: Any,
                                                kube_options: dict[str, str]) -> None:
    admin = builder(namespace, kube_options)
    admin.bootstrap()
    pod = core(kube_api).list_namespaced_pod(namespace).items[0].metadata.name

    # May read deployments, may not list pods: the verb and resource are named.
    config = restricted(kube, kube_api, namespace, [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    limited = builder(namespace, kube_options, kubeconfig=config)
    with pytest.raises(BuilderError) as info:
        limited.connect(timeout=20)
    assert info.value.message.startswith(f"RBAC forbids `list pods` in namespace `{namespace}`")
    assert "envd-restricted" in info.value.message and "\n" not in info.value.message

    # May get the pod, may not exec into it.
    by_pod = KubePodBuilder(f"{pod}?namespace={namespace}", {"kubeconfig": config})
    with pytest.raises(BuilderError) as info:
        by_pod.connect(timeout=20)
    # the verb the API server checked: a WebSocket upgrade is `get` before v1.35
    assert re.match(rf"RBAC forbids `(get|create) pods/exec` on pod `{pod}` in namespace "
                    rf"`{namespace}`: ", info.value.message), info.value.message

    # A pod that cannot be scheduled: not running.
    core(kube_api).create_namespaced_pod(namespace, {
        "metadata": {"name": "stuck"},
        "spec": {"nodeSelector": {"envd.io/none": "x"},
                 "containers": [{"name": "c", "image": kube_options["image"]}]}})
    # the scheduler marks it Unschedulable a moment later; until then it is only Pending
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conditions = core(kube_api).read_namespaced_pod("stuck", namespace).status.conditions
        if any(c.type == "PodScheduled" and c.reason == "Unschedulable"
               for c in conditions or []):
            break
        time.sleep(0.5)
    stuck = KubePodBuilder(f"stuck?namespace={namespace}", kube_options)
    with pytest.raises(BuilderError) as info:
        stuck.connect(timeout=20)
    assert info.value.message == (f"pod `stuck` (namespace `{namespace}`) is not running: "
                                  "Pending, Unschedulable")

    # A deployment whose image cannot be pulled: no pods ready, and bootstrap says why.
    broken = builder(namespace, kube_options, name="broken",
                     image="127.0.0.1:5000/envd/no-such-image:1")
    with pytest.raises(BuilderError) as info:
        broken.bootstrap()
    assert "cannot run: ErrImagePull" in info.value.message or \
        "cannot run: ImagePullBackOff" in info.value.message, info.value.message
    with pytest.raises(BuilderError) as info:
        broken.connect(timeout=20)
    assert info.value.message.startswith(
        f"no pods ready for `deployment/broken` in namespace `{namespace}` (broken-")

    # A pod without buildctl: the exec itself fails, and its reason is the line.
    core(kube_api).create_namespaced_pod(namespace, {
        "metadata": {"name": "nobuildctl"},
        "spec": {"containers": [{"name": "c", "image": kube["IMAGE_BUSYBOX"],
                                 "command": ["sleep", "3600"]}]}})

    deadline = time.monotonic() + 120
    while core(kube_api).read_namespaced_pod("nobuildctl", namespace).status.phase != "Running":
        assert time.monotonic() < deadline
        time.sleep(1)
    plain = KubePodBuilder(f"nobuildctl?namespace={namespace}", kube_options)
    with pytest.raises(BuilderError) as info:
        plain.connect(timeout=20)
    assert "buildctl" in info.value.message and "\n" not in info.value.message


def test_status_of_missing_deployment(namespace: str, kube_options: dict[str, str],
                                      tmp_path: Path) -> None:
    status = builder(namespace, kube_options, name="absent").status(timeout=10)
    assert not status.reachable and status.error_kind == ErrorKind.NOT_FOUND
    assert status.error == (f"no pods for `deployment/absent` in namespace `{namespace}` "
                            "(a build or `envd bootstrap` creates a deployment)")
