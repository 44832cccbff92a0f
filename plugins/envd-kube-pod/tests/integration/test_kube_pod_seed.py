"""The seed scenario on a kube-pod context, end to end on the real cluster.

``envd context create --builder kube-pod --builder-address deployment/…?namespace=… --use``,
then ``envd build --output type=image,name=…,push=true``: the first build bootstraps the
Deployment, BuildKit in its pod builds and pushes to the local registry, and the image is
pulled with docker and run. ``envd context ls --status`` then shows the pod and its version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_envd_build_support import (
    Envd,
    check_image_config,
    check_image_contents,
    docker,
    marker,
    remove_images,
    write_environment,
)


def test_seed_scenario_on_kube_pod_context(tmp_path: Path, docker_host: str, ca_bundle: str,
                                           registry: str, namespace: str, kube_api: Any,
                                           kube_options: dict[str, str]) -> None:
    from kubernetes import client

    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    opts = [a for k, v in kube_options.items() for a in ("--builder-opt", f"{k}={v}")]
    envd.run("context", "create", "--name", "k8s", "--builder", "kube-pod",
             "--builder-address", f"deployment/envd-bk?namespace={namespace}", *opts, "--use")
    listed = envd.run("context", "ls").stdout
    assert "k8s (current)" in listed
    assert f"kube-pod://deployment/envd-bk?namespace={namespace}" in listed
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/kube-seed:latest"
    try:
        proc = envd.build(context, "--output", f"type=image,name={image},push=true",
                          "--format", "json", timeout=1200)
        result = json.loads(proc.stdout)
        assert result["pushed"] is True and result["destination"] == image, result
        assert "creating deployment" in proc.stderr, proc.stderr  # auto-bootstrap said so
        dep = client.AppsV1Api(kube_api).read_namespaced_deployment("envd-bk", namespace)
        assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "envd"
        assert dep.status.ready_replicas == 1

        rows = json.loads(envd.run("context", "ls", "--status", "--format", "json",
                                   "--timeout", "60").stdout)
        row = next(r for r in rows if r["context"] == "k8s")
        pod = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items[0].metadata.name
        assert row["status"]["reachable"] is True, json.dumps(row["status"])
        assert row["status"]["version"] == f"v0.18.2; 1/1 pods ready ({pod}: v0.18.2)"

        remove_images(docker_host, image)
        docker("pull", "-q", image, docker_host=docker_host)
        check_image_contents(image, mark, docker_host=docker_host,
                             base_image=f"{registry}/python:3.11-bookworm")
        check_image_config(image, mark, docker_host=docker_host)
    finally:
        remove_images(docker_host, image)
