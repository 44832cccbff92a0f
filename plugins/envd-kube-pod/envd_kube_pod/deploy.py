"""The Deployment envd creates for a ``deployment/<name>`` context, and its lifecycle.

The manifest is a plain dict (the client accepts dicts; no model classes to keep in step). It is
labelled ``app.kubernetes.io/managed-by=envd`` and ``envd.io/builder=<name>``: ``remove`` deletes
only objects carrying both, and bootstrap refuses to adopt a Deployment without them. The pod
template's hash is stored in the ``envd.io/spec-hash`` annotation, so a second bootstrap with the
same options compares one string and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import attrs

from envd_core.builder import DaemonAction, DaemonChange, Report
from envd_core.errors import BuilderError, ErrorKind, ValidationError
from envd_kube_pod.cluster import DEPLOYMENTS, Cluster, PodInfo

MANAGED_BY = ("app.kubernetes.io/managed-by", "envd")
BUILDER_LABEL = "envd.io/builder"
HASH_ANNOTATION = "envd.io/spec-hash"
CONTAINER = "buildkitd"
#: buildkitd's socket: as root, and as the rootless image's user 1000 ($XDG_RUNTIME_DIR).
SOCKET = "/run/buildkit/buildkitd.sock"
ROOTLESS_SOCKET = "/run/user/1000/buildkit/buildkitd.sock"
#: Pod states that will not heal by waiting.
FATAL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "CrashLoopBackOff", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})


@attrs.frozen
class Settings:
    """What the options ask the Deployment to be (already parsed and checked)."""

    image: str
    replicas: int = 1
    rootless: bool = False
    host_network: bool = False
    requests: dict[str, str] = attrs.field(factory=dict)
    limits: dict[str, str] = attrs.field(factory=dict)
    node_selector: dict[str, str] = attrs.field(factory=dict)
    tolerations: list[dict[str, str]] = attrs.field(factory=list)
    service_account: str | None = None
    buildkitd_flags: tuple[str, ...] = ()
    #: Also listen on this TCP port of the pod's loopback (for transport=port-forward).
    tcp_port: int | None = None


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """``k=v,k2=v2`` into a dict; ValidationError naming ``what`` on a malformed pair."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValidationError(f"`{part}` in {what} is not key=value",
                                  hint=f"write {what}=key=value,key2=value2")
        out[key.strip()] = value.strip()
    return out


def parse_resources(text: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """``cpu=1,memory=2Gi,limits.memory=4Gi`` into (requests, limits)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for key, value in parse_pairs(text, "resources").items():
        section, dot, name = key.partition(".")
        if dot and section in ("requests", "limits"):
            (requests if section == "requests" else limits)[name] = value
        else:
            requests[key] = value
    return requests, limits


def parse_tolerations(text: str | None) -> list[dict[str, str]]:
    """``key=value:Effect``, ``key:Effect`` or ``key``, comma-separated, as V1Toleration dicts."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        head, colon, effect = part.rpartition(":") if ":" in part else (part, "", "")
        key, eq, value = head.partition("=")
        if not key or (effect and effect not in ("NoSchedule", "PreferNoSchedule",
                                                   "NoExecute")):
            raise ValidationError(f"`{part}` is not a toleration",
                                  hint="write key=value:NoSchedule, key:NoExecute or key")
        tol = {"key": key, "operator": "Equal" if eq else "Exists"}
        if eq:
            tol["value"] = value
        if colon:
            tol["effect"] = effect
        out.append(tol)
    return out


def manifest(name: str, namespace: str, s: Settings) -> dict[str, Any]:
    """The Deployment running buildkitd (privileged, or rootless) for ``name``."""
    labels = {MANAGED_BY[0]: MANAGED_BY[1], BUILDER_LABEL: name}
    # Rootless: no new PID namespace per build step (the pod's /proc is masked, so runc could
    # not mount a fresh one: BuildKit's own rootless Kubernetes examples pass this too).
    args = ["--oci-worker-no-process-sandbox"] if s.rootless else []
    sock = ROOTLESS_SOCKET if s.rootless else SOCKET
    if s.tcp_port:
        args += ["--addr", f"unix://{sock}", "--addr", f"tcp://127.0.0.1:{s.tcp_port}"]
    args += list(s.buildkitd_flags)
    env: list[dict[str, str]] = []
    if s.rootless:
        # rootlesskit needs user namespaces and mounts that the default profiles forbid.
        security: dict[str, Any] = {"runAsUser": 1000, "runAsGroup": 1000,
                                    "seccompProfile": {"type": "Unconfined"},
                                    "appArmorProfile": {"type": "Unconfined"}}
        # As the upstream rootless image sets them, so an image built without them works too:
        # buildkitd, the mapped root of rootlesskit's user namespace, takes its rootless
        # defaults (state under $HOME, the socket under $XDG_RUNTIME_DIR) only when $USER is
        # not root (measured: without it, `open /var/lib/buildkit/buildkitd.lock: permission
        # denied`), and buildctl (the readiness probe, dial-stdio) finds the socket by
        # BUILDKIT_HOST.
        env = [{"name": "USER", "value": "user"},
               {"name": "BUILDKIT_HOST", "value": f"unix://{sock}"}]
    else:
        security = {"privileged": True}
    container: dict[str, Any] = {
        "name": CONTAINER, "image": s.image, "args": args, "securityContext": security,
        # What buildx's kubernetes driver probes too: buildkitd answers on its socket.
        "readinessProbe": {"exec": {"command": ["buildctl", "debug", "workers"]},
                           "initialDelaySeconds": 1, "periodSeconds": 2,
                           "timeoutSeconds": 10, "failureThreshold": 3},
    }
    if env:
        container["env"] = env
    if s.requests or s.limits:
        container["resources"] = {k: v for k, v in (("requests", s.requests),
                                                    ("limits", s.limits)) if v}
    pod: dict[str, Any] = {
        "containers": [container],
        # buildkitd needs no API access; a named service account opts back in.
        "automountServiceAccountToken": s.service_account is not None,
    }
    if s.service_account:
        pod["serviceAccountName"] = s.service_account
    if s.host_network:
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
    if s.node_selector:
        pod["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod["tolerations"] = list(s.tolerations)
    template = {"metadata": {"labels": labels}, "spec": pod}
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {HASH_ANNOTATION: digest}},
        "spec": {"replicas": s.replicas, "selector": {"matchLabels": {BUILDER_LABEL: name}},
                 "template": template},
    }


def owned(obj: dict[str, Any], name: str) -> bool:
    """Whether a Deployment (JSON) carries the labels envd puts on the one it creates for
    ``name``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and labels.get(BUILDER_LABEL) == name


def ensure(cluster: Cluster, name: str, s: Settings, *, force: bool, report: Report,
           timeout: float) -> DaemonChange:
    """Create, scale or (with ``force``) update the Deployment; wait for its pods."""
    ns = cluster.namespace
    want = manifest(name, ns, s)
    found = cluster.deployment(name)
    where = f"deployment {ns}/{name} ({s.replicas} x {s.image}, "
    where += ("rootless" if s.rootless else "privileged") + ")"
    if found is None:
        report(f"creating {where}")
        cluster.request("create", "deployments", "POST", DEPLOYMENTS, body=want)
        action, detail = DaemonAction.CREATED, where
    elif not owned(found, name):
        raise BuilderError(
            f"deployment `{ns}/{name}` exists and was not created by envd: leaving it alone",
            kind=ErrorKind.CONFLICT,
            hint=f"address it as selector/… to use its pods, or pick another name than {name}")
    else:
        have = ((found.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
        replicas = (found.get("spec") or {}).get("replicas")
        stale = have != want["metadata"]["annotations"][HASH_ANNOTATION]
        action, detail = DaemonAction.REUSED, where
        if stale and force:
            report(f"updating {where}")
            cluster.request("replace", "deployments", "PUT", f"{DEPLOYMENTS}/{name}",
                            body=want)
            action = DaemonAction.RECREATED
        elif replicas != s.replicas:
            report(f"scaling deployment {ns}/{name} from {replicas} to {s.replicas} replicas")
            cluster.request("patch", "deployments/scale", "PATCH",
                            f"{DEPLOYMENTS}/{name}/scale",
                            body={"spec": {"replicas": s.replicas}},
                            content_type="application/merge-patch+json")
            action = DaemonAction.STARTED
        if stale and not force:
            detail += ("; stale: its pod template differs from the options "
                       "(bootstrap --force updates it)")
    ready = wait_ready(cluster, name, s.replicas, report=report, timeout=timeout)
    return DaemonChange(action, f"{detail}; {len(ready)}/{s.replicas} pods ready")


def wait_ready(cluster: Cluster, name: str, replicas: int, *, report: Report,
               timeout: float) -> list[PodInfo]:
    """Poll until ``replicas`` pods of the Deployment are ready; one line when they cannot be."""
    from envd_kube_pod.address import Address

    address = Address("deployment", name)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        pods = [p for p in cluster.pods(address) if not p.terminating]
        ready = [p for p in pods if p.ready]
        line = f"pods ready: {len(ready)}/{replicas}" + "".join(
            f"; {p.name}: {p.reason or p.phase}" for p in pods if not p.ready)
        if line != last:
            report(line)
            last = line
        if len(ready) >= replicas:
            return ready
        fatal = [p for p in pods if p.reason in FATAL_REASONS]
        if fatal:
            raise BuilderError(
                f"pod `{fatal[0].name}` of deployment `{cluster.namespace}/{name}` cannot run: "
                f"{fatal[0].reason}",
                kind=ErrorKind.UNAVAILABLE,
                hint="check the image option and `kubectl describe pod`; the deployment is "
                     "kept (envd builder rm removes it)")
        if time.monotonic() > deadline:
            raise BuilderError(
                f"no pods ready: {len(ready)}/{replicas} pods of deployment "
                f"`{cluster.namespace}/{name}` ready after {timeout:.0f} s ({line})",
                kind=ErrorKind.TIMEOUT)
        time.sleep(1.0)


def remove(cluster: Cluster, name: str, *, report: Report) -> list[str]:
    """Delete the Deployments labelled as envd's for ``name``; the names deleted."""
    ns = cluster.namespace
    selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]},{BUILDER_LABEL}={name}"
    found = cluster.request("list", "deployments", "GET", DEPLOYMENTS,
                            query=[("labelSelector", selector)])
    removed = []
    for dep in found.get("items") or []:
        dep_name = dep["metadata"]["name"]
        report(f"deleting deployment {ns}/{dep_name}")
        cluster.request("delete", "deployments", "DELETE", f"{DEPLOYMENTS}/{dep_name}",
                        body={"propagationPolicy": "Background"})
        removed.append(f"deployment {ns}/{dep_name}")
    return removed
