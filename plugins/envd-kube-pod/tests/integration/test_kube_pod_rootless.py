"""Rootless BuildKit pods on the real cluster: the seed build through them, pushed and pulled.

``--builder-opt rootless=true`` makes envd's Deployment run the rootless image as UID 1000 with
seccomp and AppArmor unconfined and ``--oci-worker-no-process-sandbox`` (BuildKit's own
rootless Kubernetes examples); rootlesskit inside the pod makes the user namespace with the
image's file-capability ``newuidmap``/``newgidmap``. The image is the infra's
``moby/buildkit:v0.18.2-rootless`` (``scripts/infra``, docs/rootless.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_envd_build_support import (
    Envd,
    check_image_contents,
    docker,
    marker,
    remove_images,
    write_environment,
)


def test_seed_build_on_rootless_pods(tmp_path: Path, docker_host: str, ca_bundle: str,
                                     registry: str, namespace: str, kube_api: Any,
                                     kube: dict[str, Any],
                                     kube_options: dict[str, str]) -> None:
    from kubernetes import client

    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    options = {**kube_options, "rootless": "true", "image": kube["BUILDKIT_ROOTLESS_IMAGE_REF"]}
    opts = [a for k, v in options.items() for a in ("--builder-opt", f"{k}={v}")]
    envd.run("context", "create", "--name", "k8s-rootless", "--builder", "kube-pod",
             "--builder-address", f"deployment/envd-rl?namespace={namespace}", *opts, "--use")
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/kube-rootless:latest"
    try:
        proc = envd.build(context, "--output", f"type=image,name={image},push=true",
                          "--format", "json", timeout=1200)
        result = json.loads(proc.stdout)
        assert result["pushed"] is True and result["destination"] == image, result
        assert "rootless" in proc.stderr, proc.stderr  # bootstrap named the mode

        pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
        assert len(pods) == 1
        container = pods[0].spec.containers[0]
        assert container.security_context.run_as_user == 1000
        assert not container.security_context.privileged
        assert "--oci-worker-no-process-sandbox" in container.args
        # rootlesskit and buildkitd came up first time (a failed user namespace crash-loops)
        status = pods[0].status.container_statuses[0]
        assert status.ready and status.restart_count == 0, status

        remove_images(docker_host, image)
        docker("pull", "-q", image, docker_host=docker_host)
        check_image_contents(image, mark, docker_host=docker_host,
                             base_image=f"{registry}/python:3.11-bookworm")
    finally:
        remove_images(docker_host, image)
