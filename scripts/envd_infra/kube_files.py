"""The files the test cluster runs from: keys, tokens, kubeconfigs, containerd/kubelet/CNI
configuration and the home-made pause image. All under ``STATE/kube``, made once, kept.

Authentication is by static bearer tokens (``--token-auth-file``): an admin in
``system:masters`` (the tests and the control-plane components), the node identity the Node
authorizer expects, and ``envd-restricted``, a user with no role at all that RBAC tests bind a
narrow Role to. Tokens are random per state dir, never fixed strings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
import time
from pathlib import Path

from .config import LOGS, PORT_OFFSET, REGISTRY
from .kube_build import KUBE_DIR, KUBE_VERSION
from .shell import run

PKI, CONF = KUBE_DIR / "pki", KUBE_DIR / "conf"
CONTAINERD_DIR = KUBE_DIR / "containerd"
CONTAINERD_SOCK = CONTAINERD_DIR / "containerd.sock"
CNI_CONF_DIR = KUBE_DIR / "cni" / "net.d"
NODE_NAME = "envd-kube-node"
ETCD_PORT, ETCD_PEER_PORT = 2379 + PORT_OFFSET, 2380 + PORT_OFFSET
APISERVER_PORT, KUBELET_PORT = 6443 + PORT_OFFSET, 10250 + PORT_OFFSET
SCHEDULER_PORT, CONTROLLER_PORT = 10259 + PORT_OFFSET, 10257 + PORT_OFFSET
APISERVER = f"https://127.0.0.1:{APISERVER_PORT}"
PAUSE_IMAGE = "envd.local/pause:3.10"
# The pod network of the bridge CNI plugin: a private range and a bridge named so that `down`
# knows which interface is ours. No masquerading: the tests' pods use the host network.
POD_SUBNET, CNI_BRIDGE = f"10.{77 + PORT_OFFSET % 100}.0.0/24", f"envdkube{PORT_OFFSET}"
# The kubelet refuses a loopback node IP, and the API server reaches the kubelet at the node's
# address. A private /32 on an interface of our own keeps the kubelet off every real network.
NODE_IP, NODE_LINK = f"10.{77 + PORT_OFFSET % 100}.1.1", f"envdnode{PORT_OFFSET}"
USERS = {"admin": ("envd-admin", "system:masters"),
         "node": (f"system:node:{NODE_NAME}", "system:nodes"),
         "restricted": ("envd-restricted", "")}
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")


def _openssl(args: list[str]) -> None:
    run(["openssl", *args], LOGS / "kube-certs.log")


def ensure_pki() -> None:
    """The API server's CA and serving certificate, and the service-account key pair."""
    PKI.mkdir(parents=True, exist_ok=True)
    if not (PKI / "ca.pem").exists():
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                  "-subj", "/CN=envd-infra kubernetes CA", "-keyout", str(PKI / "ca-key.pem"),
                  "-out", str(PKI / "ca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    if not (PKI / "apiserver.pem").exists():
        ext = PKI / "apiserver.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                       "keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,"
                       "IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                       "DNS:kubernetes.default.svc\n")
        _openssl(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                  "-keyout", str(PKI / "apiserver-key.pem"), "-out", str(PKI / "apiserver.csr")])
        _openssl(["x509", "-req", "-in", str(PKI / "apiserver.csr"), "-CA", str(PKI / "ca.pem"),
                  "-CAkey", str(PKI / "ca-key.pem"), "-CAcreateserial", "-days", "3650",
                  "-extfile", str(ext), "-out", str(PKI / "apiserver.pem")])
    if not (PKI / "sa.pub").exists():
        _openssl(["genrsa", "-out", str(PKI / "sa.key"), "2048"])
        _openssl(["rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub")])


def tokens() -> dict[str, str]:
    """The bearer token of each user of USERS (made once, kept in ``tokens.json``)."""
    path = PKI / "tokens.json"
    try:
        known: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if set(known) != set(USERS):
        known = {u: known.get(u) or secrets.token_hex(24) for u in USERS}
        PKI.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
        path.chmod(0o600)
    csv = PKI / "tokens.csv"
    csv.write_text("".join(f'{known[u]},{name},{name},"{group}"\n'
                           for u, (name, group) in USERS.items()))
    csv.chmod(0o600)
    return known


def kubeconfig(user: str) -> Path:
    """A kubeconfig for ``user`` of USERS, written (JSON is valid YAML) and returned."""
    token = tokens()[user]
    CONF.mkdir(parents=True, exist_ok=True)
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "envd-infra",
        "clusters": [{"name": "envd-infra", "cluster": {
            "server": APISERVER, "certificate-authority": str(PKI / "ca.pem")}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "envd-infra", "context": {
            "cluster": "envd-infra", "user": user, "namespace": "default"}}],
    }
    path = CONF / f"{user}.kubeconfig"
    text = json.dumps(doc, indent=1)
    try:
        if path.read_text() == text:
            return path  # unchanged: no rewrite a running client could read half of
    except OSError:
        pass
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(text)
    staging.chmod(0o600)
    os.replace(staging, path)  # readers see the old file or the new one, never a partial one
    return path


def containerd_config() -> Path:
    """containerd's own config: its own root/state/socket, the CRI plugin with the two fixes
    this VM needs (no CAP_SYS_RESOURCE: restrict_oom_score_adj; no reachable pause image)."""
    root, state = CONTAINERD_DIR / "root", CONTAINERD_DIR / "state"
    certs = CONTAINERD_DIR / "certs.d"
    (certs / REGISTRY).mkdir(parents=True, exist_ok=True)
    (certs / REGISTRY / "hosts.toml").write_text(
        f'server = "http://{REGISTRY}"\n\n[host."http://{REGISTRY}"]\n'
        '  capabilities = ["pull", "resolve"]\n  skip_verify = true\n')
    CNI_CONF_DIR.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{CONTAINERD_SOCK}"
[ttrpc]
  address = "{CONTAINERD_SOCK}.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [{cri}.containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{CNI_CONF_DIR}"
  [{cri}.registry]
    config_path = "{certs}"
"""
    path = CONTAINERD_DIR / "config.toml"
    CONTAINERD_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (CNI_CONF_DIR / "10-envd.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "envd-kube",
        "plugins": [{"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True,
                     "ipMasq": False, "ipam": {"type": "host-local", "ranges": [[
                         {"subnet": POD_SUBNET}]], "dataDir": str(KUBE_DIR / "cni" / "ipam")}},
                    {"type": "loopback"}]}, indent=1))
    return path


def kubelet_config() -> Path:
    """KubeletConfiguration: cgroupfs, our containerd, serving on NODE_IP only."""
    conf = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs", "address": NODE_IP, "port": KUBELET_PORT,
        "healthzPort": 0, "readOnlyPort": 0, "failSwapOn": False, "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        # Only the API server (on this host) talks to the kubelet, on NODE_IP (a /32 on a
        # link of our own, not routed): it presents no client certificate here.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "resolvConf": "/etc/resolv.conf", "maxPods": 30,
        # A shared dev VM: never evict the tests' pods for a busy disk.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "registerNode": True,
    }
    CONF.mkdir(parents=True, exist_ok=True)
    path = CONF / "kubelet.json"
    path.write_text(json.dumps(conf, indent=1))
    return path


def pause_image_tar() -> Path:
    """An OCI image archive of a pause container made from the host's static busybox.

    No registry serves ``registry.k8s.io/pause`` here. The sandbox only has to hold the pod's
    namespaces and exit on SIGTERM; a shell loop that traps TERM does that.
    """
    out = KUBE_DIR / "pause.oci.tar"
    if out.exists():
        return out
    busybox = Path("/bin/busybox").read_bytes()
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(busybox), 0o755, 0
        layer.addfile(info, io.BytesIO(busybox))
    layer_bytes = layer_buf.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/bin/busybox", "sh", "-c",
                                  ("trap 'exit 0' TERM INT; while :; do /bin/busybox sleep "
                                   "3600 & wait $!; done")]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
    }).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer_digest}", "size": len(layer_bytes)}],
    }).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{manifest_digest}", "size": len(manifest),
        "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                        "org.opencontainers.image.ref.name": "3.10"}}]}).encode()
    KUBE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            archive.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for digest, data in ((layer_digest, layer_bytes), (config_digest, config),
                             (manifest_digest, manifest)):
            add(f"blobs/sha256/{digest}", data)
    tmp.replace(out)
    return out


def component_version() -> str:
    """The Kubernetes version the cluster runs (what the node reports)."""
    return KUBE_VERSION
