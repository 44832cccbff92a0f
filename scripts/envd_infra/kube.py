"""A real single-node Kubernetes v1.31 for the kube-pod builder's tests (``infra up --kube``).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet, built from the Go
module proxy (:mod:`envd_infra.kube_build`), plus a containerd instance of its own (own root,
state and socket; never dockerd's). Everything listens on 127.0.0.1 and keeps its state under
``STATE/kube``. The cluster is started only on request: ``up --kube`` (or
``ENVD_INFRA_KUBE=1``); ``down`` stops it and undoes what the kubelet did to the host (the
sysctls it set, the ``KUBE-*`` iptables chains it added, the CNI bridge).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import time
import urllib.request
from pathlib import Path

from .config import LOGS
from .installs import dpkg_missing
from .kube_build import KUBE_BIN, KUBE_DIR, KUBE_VERSION, ensure_kube_binaries
from .kube_files import (
    APISERVER,
    APISERVER_PORT,
    CNI_BRIDGE,
    CONTAINERD_SOCK,
    CONTROLLER_PORT,
    ETCD_PEER_PORT,
    ETCD_PORT,
    KUBELET_SYSCTLS,
    NODE_IP,
    NODE_LINK,
    NODE_NAME,
    PAUSE_IMAGE,
    PKI,
    SCHEDULER_PORT,
    containerd_config,
    ensure_pki,
    kubeconfig,
    kubelet_config,
    pause_image_tar,
    tokens,
)
from .processes import start_daemon, stop, tracked
from .shell import InfraError, output, quiet, run

#: Daemons in start order; ``down`` stops them in reverse.
DAEMONS = ("kube-etcd", "kube-containerd", "kube-apiserver", "kube-controller-manager",
           "kube-scheduler", "kubelet")
SYSCTL_SAVE = KUBE_DIR / "sysctls-before.json"


def api_get(path: str, user: str = "admin", timeout: float = 3) -> object | None:
    """GET ``path`` on the API server as ``user``; the decoded JSON, or None when it fails."""
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.pem"))
    req = urllib.request.Request(APISERVER + path,
                                 headers={"Authorization": f"Bearer {tokens()[user]}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            body = resp.read()
    except (OSError, ssl.SSLError, ValueError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def node_ready() -> bool:
    """The node is registered and its Ready condition is True."""
    node = api_get(f"/api/v1/nodes/{NODE_NAME}")
    if not isinstance(node, dict):
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _etcd() -> list[str]:
    data = KUBE_DIR / "etcd"
    return [str(KUBE_BIN / "etcd"), "--name", "envd", "--data-dir", str(data),
            "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-cluster", f"envd=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--log-level", "warn"]


def _apiserver() -> list[str]:
    return [str(KUBE_BIN / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={PKI / 'apiserver.pem'}",
            f"--tls-private-key-file={PKI / 'apiserver-key.pem'}",
            f"--token-auth-file={PKI / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={PKI / 'sa.pub'}",
            f"--service-account-signing-key-file={PKI / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24", "--allow-privileged=true",
            "--profiling=false", "--kubelet-preferred-address-types=InternalIP",
            "--endpoint-reconciler-type=none", "--v=1"]


def _controller_manager() -> list[str]:
    return [str(KUBE_BIN / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig('admin')}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={CONTROLLER_PORT}",
            f"--service-account-private-key-file={PKI / 'sa.key'}",
            f"--root-ca-file={PKI / 'ca.pem'}", "--use-service-account-credentials=false",
            *_delegated_auth(), "--v=1"]


def _scheduler() -> list[str]:
    return [str(KUBE_BIN / "kube-scheduler"), f"--kubeconfig={kubeconfig('admin')}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={SCHEDULER_PORT}", *_delegated_auth(), "--v=1"]


def _delegated_auth() -> list[str]:
    """Where the scheduler and controller-manager check who calls their own endpoints."""
    admin = kubeconfig("admin")
    return [f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}"]


def _kubelet() -> list[str]:
    return [str(KUBE_BIN / "kubelet"), f"--config={kubelet_config()}",
            f"--kubeconfig={kubeconfig('node')}", f"--root-dir={KUBE_DIR / 'kubelet'}",
            f"--cert-dir={KUBE_DIR / 'kubelet' / 'pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", "--v=1"]


def ensure_node_ip() -> None:
    """NODE_IP on a bridge link of our own (no dummy module on this VM; a bridge with no
    ports routes nothing)."""
    if quiet(["ip", "link", "show", NODE_LINK]):
        return
    log = LOGS / "kubelet.log"
    run(["ip", "link", "add", NODE_LINK, "type", "bridge"], log)
    run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK], log)
    run(["ip", "link", "set", NODE_LINK, "up"], log)


def save_sysctls() -> None:
    """Record the sysctls the kubelet changes, once, before it first runs."""
    if SYSCTL_SAVE.exists():
        return
    values = {}
    for key in KUBELET_SYSCTLS:
        out = output(["sysctl", "-n", key])
        if out is not None:
            values[key] = out.strip()
    SYSCTL_SAVE.write_text(json.dumps(values))


def import_pause_image() -> None:
    """The home-made pause image into containerd's ``k8s.io`` namespace (kept once imported)."""
    ctr = ["ctr", "--address", str(CONTAINERD_SOCK), "-n", "k8s.io"]
    if PAUSE_IMAGE in (output([*ctr, "images", "ls", "-q"]) or ""):
        return
    # Unpacked into the snapshotter the CRI plugin uses: a sandbox needs its layers ready.
    run([*ctr, "images", "import", "--snapshotter", "native", str(pause_image_tar())],
        LOGS / "kube-containerd.log")


def ensure_kube_installed() -> str:
    """The cluster's packages and binaries (built once, ~15-20 min cold); nothing started.

    ``scripts/test`` runs this in the background while the rest of the suite runs, so a fresh
    machine overlaps the Go build with tests that mostly wait on daemons.
    """
    missing = dpkg_missing(["containerd", "containernetworking-plugins", "iptables"])
    if missing:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
            LOGS / "apt.log", env=env, timeout=1200)
    return ensure_kube_binaries()


def ensure_kube() -> str:
    """Build (once) and start the cluster; return when the node is Ready."""
    built = ensure_kube_installed()
    t0 = time.monotonic()
    ensure_pki()
    tokens()
    etcd_health = f"http://127.0.0.1:{ETCD_PORT}/health"
    steps = [
        ("kube-etcd", _etcd, lambda: "true" in str(_http(etcd_health))),
        ("kube-containerd", lambda: ["containerd", "--config", str(containerd_config())],
         lambda: quiet(["ctr", "--address", str(CONTAINERD_SOCK), "version"], timeout=5)),
        ("kube-apiserver", _apiserver, lambda: api_get("/readyz") == "ok"),
        ("kube-controller-manager", _controller_manager, lambda: True),
        ("kube-scheduler", _scheduler, lambda: True),
    ]
    started = []
    for name, argv, ready in steps:
        if tracked(name):
            continue
        start_daemon(name, argv(), ready, timeout=180)
        started.append(name)
        if name == "kube-containerd":
            import_pause_image()
    if not tracked("kubelet"):
        save_sysctls()
        ensure_node_ip()
        start_daemon("kubelet", _kubelet(), lambda: api_get(f"/api/v1/nodes/{NODE_NAME}")
                     is not None, timeout=180)
        started.append("kubelet")
    deadline = time.monotonic() + 240
    while not node_ready():
        if time.monotonic() > deadline:
            raise InfraError(f"node {NODE_NAME} did not become Ready in 240 s",
                             LOGS / "kubelet.log")
        time.sleep(1)
    # The default ServiceAccount must exist before pods are admitted (controller-manager).
    while api_get("/api/v1/namespaces/default/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise InfraError("no default ServiceAccount: is the controller-manager running?",
                             LOGS / "kube-controller-manager.log")
        time.sleep(0.5)
    what = f"started {', '.join(started)}" if started else "running"
    return (f"Kubernetes {KUBE_VERSION} {what}; node Ready in {time.monotonic() - t0:.1f}s "
            f"(binaries {built}); kubeconfig {kubeconfig('admin')}")


def _http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return str(resp.read().decode(errors="replace"))
    except (OSError, ValueError):
        return None


def restore_sysctls() -> list[str]:
    """Put back the sysctls recorded before the kubelet first ran."""
    try:
        saved: dict[str, str] = json.loads(SYSCTL_SAVE.read_text())
    except (OSError, ValueError):
        return []
    done = []
    for key, value in saved.items():
        if (output(["sysctl", "-n", key]) or "").strip() != value and \
                quiet(["sysctl", "-q", "-w", f"{key}={value}"]):
            done.append(f"{key}={value}")
    SYSCTL_SAVE.unlink(missing_ok=True)
    return done


def remove_iptables_chains() -> int:
    """Delete the ``KUBE-*`` chains (and the rules jumping to them) the kubelet created."""
    removed = 0
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("filter", "nat", "mangle"):
            dump = output([tool, "-t", table, "-S"]) or ""
            rules = [ln for ln in dump.splitlines() if ln.startswith("-A ") and " -j KUBE-" in ln
                     and not ln.split()[1].startswith("KUBE-")]
            for rule in rules:  # jumps from built-in chains first, then the chains
                quiet([tool, "-t", table, "-D", *rule.split()[1:]])
            chains = [ln.split()[1] for ln in dump.splitlines()
                      if ln.startswith("-N KUBE-")]
            for chain in chains:
                quiet([tool, "-t", table, "-F", chain])
            for chain in chains:
                if quiet([tool, "-t", table, "-X", chain]):
                    removed += 1
    return removed


def kill_pod_processes() -> None:
    """Stop the containers the kubelet left (containerd-shim sessions outlive containerd)."""
    ctr = ["ctr", "--address", str(CONTAINERD_SOCK), "-n", "k8s.io"]
    for task in (output([*ctr, "tasks", "ls", "-q"]) or "").split():
        quiet([*ctr, "tasks", "kill", "-s", "SIGKILL", task])


def down_kube() -> list[str]:
    """Stop the cluster's daemons and undo the kubelet's host changes; what was done."""
    done = []
    if tracked("kube-containerd"):
        if stop("kubelet"):  # first, so it does not restart the containers killed next
            done.append("stopped kubelet")
        kill_pod_processes()
        time.sleep(1)
    for name in reversed(DAEMONS):
        if stop(name, grace=20):
            done.append(f"stopped {name}")
    # Shims live in their own sessions; the ones of our containerd are found by its socket.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and \
                str(CONTAINERD_SOCK).encode() in b" ".join(cmdline):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), 9)
    kubelet_pods = KUBE_DIR / "kubelet" / "pods"
    if kubelet_pods.exists():  # volume mounts (tmpfs secrets) the kubelet left
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                  if ln.split()[1].startswith(str(KUBE_DIR))]
        for mount in sorted(mounts, key=len, reverse=True):
            quiet(["umount", "-l", mount])
    # The host-wide undo only when this state dir's kubelet ever ran (it recorded the sysctls
    # first): an instance that never started one must not strip another's chains.
    if not SYSCTL_SAVE.exists():
        return done
    restored = restore_sysctls()
    if restored:
        done.append("restored " + " ".join(restored))
    chains = remove_iptables_chains()
    if chains:
        done.append(f"removed {chains} KUBE-* iptables chains")
    for link in (CNI_BRIDGE, NODE_LINK):
        if quiet(["ip", "link", "show", link]):
            quiet(["ip", "link", "delete", link])
            done.append(f"removed link {link}")
    return done


def kube_status() -> str:
    """One line of health for ``status``."""
    if not any(tracked(n) for n in DAEMONS):
        return "not started (up --kube starts it)"
    down = [n for n in DAEMONS if not tracked(n)]
    if down:
        return "partly down: " + ", ".join(down)
    return "up, node Ready" if node_ready() else "up, node not Ready"


def kube_env() -> dict[str, object]:
    """The cluster's endpoints for ``env`` (empty while it is not running)."""
    if not tracked("kube-apiserver"):
        return {"KUBECONFIG": ""}
    return {"KUBECONFIG": str(kubeconfig("admin")),
            "KUBE_RESTRICTED_KUBECONFIG": str(kubeconfig("restricted")),
            "KUBE_APISERVER": APISERVER, "KUBE_VERSION": KUBE_VERSION, "KUBE_NODE": NODE_NAME,
            "KUBE_CONTAINERD_SOCK": str(CONTAINERD_SOCK)}

