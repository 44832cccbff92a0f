"""In-cluster configuration, for real: ``envd build`` with a service account's token.

Inside a pod, the kubelet mounts the service account's token, the cluster CA and the namespace
at ``/var/run/secrets/kubernetes.io/serviceaccount`` and sets ``KUBERNETES_SERVICE_HOST`` and
``_PORT``. Here the same is made for one process: a ServiceAccount bound to a Role, a token from
the TokenRequest API, the infra's cluster CA, bind-mounted over that path in a private mount
namespace (``unshare -m``, so no other process sees it), and the two variables; no kubeconfig
anywhere (``KUBECONFIG`` unset, ``HOME`` empty). The context's address names no namespace: it
comes from the mounted ``namespace`` file. The same setup with a Role lacking a permission gives
the one-line RBAC error naming the verb and the resource.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envd_kube_pod import KubePodBuilder
from test_envd_build_support import ENVD, Envd, marker, remove_images, write_environment

SA_DIR = Path("/run/secrets/kubernetes.io/serviceaccount")  # /var/run is /run here


@pytest.fixture
def mountpoint() -> Iterator[Path]:
    """The empty in-pod path on the host, made for the test (the bind mount itself lives only
    in the test's mount namespace); removed afterwards if the test made it."""
    made = [p for p in (SA_DIR, *SA_DIR.parents) if not p.exists()]
    SA_DIR.mkdir(parents=True, exist_ok=True)
    yield SA_DIR
    for path in made:  # deepest first; only directories this fixture created, still empty
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


class InPod(Envd):
    """``envd`` in a private mount namespace that sees ``secrets`` at the in-pod path."""

    secrets: Path
    host: tuple[str, str] = ("", "")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if k != "KUBECONFIG"}
        env["HOME"] = str(self.config_dir / "home")  # no ~/.kube/config either
        env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = self.host
        return env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'mount --bind "$1" {SA_DIR} && shift && exec "$@"', "sh",
                str(self.secrets), ENVD, *args]
        proc = subprocess.run(argv, check=False, cwd=cwd, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"`{' '.join(args)}` exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n"
                                 f"{proc.stderr[-6000:]}")
        return proc


def service_account(kube_api: Any, namespace: str, name: str,
                    rules: list[dict[str, Any]]) -> str:
    """A ServiceAccount bound to a Role with ``rules``; a one-hour token for it."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    answer = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}})
    return str(answer.status.token)


def secrets_dir(directory: Path, token: str, namespace: str, kube: dict[str, Any]) -> Path:
    """What the kubelet mounts: token, ca.crt, namespace."""
    config = json.loads(Path(kube["KUBECONFIG"]).read_text())  # the infra writes JSON
    ca = config["clusters"][0]["cluster"]["certificate-authority"]
    directory.mkdir(parents=True)
    (directory / "token").write_text(token)
    shutil.copyfile(ca, directory / "ca.crt")
    (directory / "namespace").write_text(namespace)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_line(stderr: str) -> str:
    """The one ``envd:`` line of a failed command (the others say what it was doing)."""
    lines = [line for line in stderr.splitlines() if line.startswith("envd: ")]
    assert len(lines) == 1, stderr
    return lines[0]


BUILD_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    # a WebSocket upgrade is a GET: `get` before Kubernetes v1.35, `create` from then on
    {"apiGroups": [""], "resources": ["pods/portforward", "pods/exec"],
     "verbs": ["get", "create"]},
]


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --mount needs root")
def test_build_with_the_in_cluster_service_account(
        tmp_path: Path, mountpoint: Path, docker_host: str, ca_bundle: str, registry: str,
        namespace: str, kube: dict[str, Any], kube_api: Any,
        kube_options: dict[str, str]) -> None:
    # The admin bootstraps the builder (port-forward to a free loopback port, host network
    # for the registry); the service account may only find the pods and connect.
    port = str(free_port())
    shared = {k: v for k, v in kube_options.items() if k != "kubeconfig"}
    shared |= {"transport": "port-forward", "port": port}
    KubePodBuilder(f"deployment/envd-bk?namespace={namespace}",
                   {**kube_options, **shared}).bootstrap()
    server = kube["KUBE_APISERVER"].removeprefix("https://").rsplit(":", 1)

    envd = InPod(tmp_path / "config", docker_host, ca_bundle)
    envd.host = (server[0], server[1])
    envd.secrets = secrets_dir(tmp_path / "sa", service_account(
        kube_api, namespace, "envd-builder", BUILD_RULES), namespace, kube)
    (tmp_path / "config" / "home").mkdir(parents=True)
    opts = [a for k, v in shared.items() for a in ("--builder-opt", f"{k}={v}")]
    envd.run("context", "create", "--name", "in-pod", "--builder", "kube-pod",
             "--builder-address", "deployment/envd-bk", *opts, "--use")
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/kube-incluster:latest"
    try:
        proc = envd.build(context, "--output", f"type=image,name={image},push=true",
                          "--format", "json", timeout=1200)
        assert json.loads(proc.stdout)["pushed"] is True, proc.stdout
        assert "creating deployment" not in proc.stderr  # found the admin's, in the SA's ns

        # The same process setup, a Role without `list pods`: one line, verb and resource.
        envd.secrets = secrets_dir(tmp_path / "sa-narrow", service_account(
            kube_api, namespace, "envd-narrow", [BUILD_RULES[0]]), namespace, kube)
        denied = envd.build(context, "--output", f"type=image,name={image},push=true",
                            check=False, timeout=300)
        assert denied.returncode != 0
        line = error_line(denied.stderr)
        assert line.startswith(f"envd: RBAC forbids `list pods` in namespace `{namespace}`"), \
            denied.stderr
        assert f"system:serviceaccount:{namespace}:envd-narrow" in line
        assert "Traceback" not in denied.stderr

        # May list pods, may not port-forward: the connect names the verb the server checked.
        envd.secrets = secrets_dir(tmp_path / "sa-nopf", service_account(
            kube_api, namespace, "envd-nopf", BUILD_RULES[:2]), namespace, kube)
        denied = envd.build(context, "--output", f"type=image,name={image},push=true",
                            check=False, timeout=300)
        assert denied.returncode != 0
        line = error_line(denied.stderr)
        assert re.match(r"envd: RBAC forbids `(get|create) pods/portforward` on pod `envd-bk-",
                        line), denied.stderr
    finally:
        remove_images(docker_host, image)
