"""The forwarding keeper on the real cluster: builds through it, routing, errors, idle exit.

Each test waits for its context's keeper (a build never does: the first one connects directly
and starts it), then checks that connections went through it (``via_keeper``, the keeper's
``served`` counter) and behave as the direct path does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from envd_kube_pod import KubePodBuilder, keeper_client
from test_kube_pod_cluster import builder, core, one_project_per_pod, restricted

from envd_core.builder import DaemonAction
from envd_core.buildkit.client import probe
from envd_core.errors import BuilderError
from envd_core.resident.wire import exited


def kept(b: KubePodBuilder) -> str:
    """Start ``b``'s keeper and wait for it; its control socket."""
    sock = keeper_client.start(b.address, b.option_values, os.environ)
    assert sock is not None, "the keeper did not start (kube-keeper.log in ENVD_RESIDENT_DIR)"
    return sock


def keeper_log() -> str:
    """The keepers' log of this session (why a build went direct, if one did)."""
    path = Path(os.environ["ENVD_RESIDENT_DIR"], "kube-keeper.log")
    return path.read_text()[-3000:] if path.exists() else "(no kube-keeper.log)"


def status(sock: str) -> dict[str, Any]:
    reply = keeper_client.ask(sock, {"op": "status"}, timeout=10)
    assert reply is not None
    return reply


def test_a_build_connection_goes_through_the_keeper(namespace: str,
                                                     kube_options: dict[str, str]) -> None:
    b = builder(namespace, kube_options)
    assert b.bootstrap().action is DaemonAction.CREATED
    sock = kept(b)
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    registered = [k for k in keeper_client.keepers(os.path.dirname(sock))
                  if k["socket"] == sock]
    assert registered and registered[0]["address"] == f"kube-pod://{b.address}"
    before = status(sock)["served"]
    for _ in range(3):
        conn = b.connect(timeout=60)
        try:
            assert probe(conn, timeout=30)["version"] == "v0.18.2"
        finally:
            conn.close()
        assert b.via_keeper, f"{b.keeper_miss}\n{keeper_log()}"
        assert conn.target.startswith(f"kube-pod://{namespace}/bk-")
    assert status(sock)["served"] >= before + 3

    # A build process that finds the keeper imports no part of the kubernetes client.
    code = ("import json, sys\n"
            "from envd_kube_pod import KubePodBuilder\n"
            f"b = KubePodBuilder({b.address!r}, json.loads(sys.argv[1]))\n"
            "conn = b.connect(timeout=60)\n"
            "conn.close()\n"
            "print(json.dumps([b.via_keeper, sorted(m for m in sys.modules\n"
            "                   if m.split('.')[0] in ('kubernetes', 'websocket', 'urllib3'))]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(b.option_values)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == [True, []], out


def test_routing_through_the_keeper_moves_with_a_notice(
        namespace: str, kube_api: Any, kube_options: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    b = builder(namespace, kube_options, replicas="2")
    assert b.bootstrap().action is DaemonAction.CREATED
    kept(b)

    def build_on(project: str) -> str:
        b.project = project
        conn = b.connect(timeout=60)
        try:
            assert probe(conn, timeout=30)["version"] == "v0.18.2"
        finally:
            conn.close()
        assert b.via_keeper, f"{b.keeper_miss}\n{keeper_log()}"
        assert b.last_pod is not None
        return b.last_pod

    pods = sorted(p.metadata.name for p in core(kube_api).list_namespaced_pod(namespace).items)
    chosen = one_project_per_pod(pods)
    assert {project: build_on(project) for project in chosen.values()} == \
        {project: pod for pod, project in chosen.items()}
    pod, project = next(iter(chosen.items()))
    assert all(build_on(project) == pod for _ in range(3))
    assert b.last_notice is None

    core(kube_api).delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    capsys.readouterr()
    moved = build_on(project)  # at once: the keeper lists the pods for every build
    assert moved != pod
    assert b.last_notice is not None and f"pod `{pod}`" in b.last_notice
    assert f"notice: kube-pod: pod `{pod}`" in capsys.readouterr().err


def test_errors_through_the_keeper_are_the_direct_lines(
        namespace: str, kube: dict[str, Any], kube_api: Any,
        kube_options: dict[str, str]) -> None:
    admin = builder(namespace, kube_options)
    admin.bootstrap()
    config = restricted(kube, kube_api, namespace, [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    limited = builder(namespace, kube_options, kubeconfig=config)
    sock = kept(limited)
    with pytest.raises(BuilderError) as info:
        limited.connect(timeout=20)
    assert info.value.message.startswith(f"RBAC forbids `list pods` in namespace `{namespace}`")
    assert "envd-restricted" in info.value.message and "\n" not in info.value.message
    assert status(sock)["routes"] >= 1  # the keeper listed, and relayed the refusal

    # May list pods, may not exec: the keeper cannot bridge, the build falls back to
    # the direct path, which names the verb the API server checked.
    config = restricted_more(kube, kube_api, namespace)
    nopf = builder(namespace, kube_options, kubeconfig=config)
    kept(nopf)
    deadline = time.monotonic() + 30
    while True:  # the API server's authorizer sees the patched Role a moment later
        with pytest.raises(BuilderError) as info:
            nopf.connect(timeout=20)
        if "`list pods`" not in info.value.message or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    # (host-network pods have no TCP listener: `auto` execs buildctl dial-stdio there)
    assert "RBAC forbids" in info.value.message and "pods/exec" in info.value.message, \
        info.value.message


def restricted_more(kube: dict[str, Any], kube_api: Any, namespace: str) -> str:
    """The restricted user, now also allowed to list pods (not to exec or port-forward)."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.patch_namespaced_role("envd-test", namespace, {"rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    return str(kube["KUBE_RESTRICTED_KUBECONFIG"])


def test_the_keeper_exits_when_idle_and_a_stopped_one_is_replaced(
        namespace: str, kube_options: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    b = builder(namespace, kube_options)
    b.bootstrap()
    monkeypatch.setenv("ENVD_KUBE_KEEPER_IDLE", "2")
    sock = kept(b)
    pid = status(sock)["pid"]
    deadline = time.monotonic() + 30
    while Path(sock).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(sock).exists(), "the keeper did not exit after 2 s idle"
    registration = keeper_client.paths(os.path.dirname(sock), sock.rsplit("-", 1)[1][:-5])[2]
    assert registration.endswith(".helper.json") and not Path(registration).exists()
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)

    # With no keeper, a build connects directly and starts one for the next build.
    monkeypatch.setenv("ENVD_KUBE_KEEPER_IDLE", "60")
    conn = b.connect(timeout=60)
    conn.close()
    assert not b.via_keeper
    assert b.keeper_miss is not None and b.keeper_miss.startswith("no keeper answered on")
    assert keeper_client.start(b.address, b.option_values, os.environ) is not None
    conn = b.connect(timeout=60)
    conn.close()
    assert b.via_keeper, f"{b.keeper_miss}\n{keeper_log()}"

    # ENVD_KUBE_KEEPER=0: the direct path, keeper or not.
    monkeypatch.setenv("ENVD_KUBE_KEEPER", "0")
    conn = b.connect(timeout=60)
    conn.close()
    assert not b.via_keeper
    assert b.keeper_miss == "ENVD_KUBE_KEEPER turns it off"


def _gone(pid: int) -> bool:
    """Whether ``pid`` exited (reaped here when it is this process's child, a zombie else)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return exited(pid)
