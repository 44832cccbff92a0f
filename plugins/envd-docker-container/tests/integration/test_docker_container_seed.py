"""The seed scenario on a docker-container context, end to end on the real dockerd.

``envd context create --builder docker-container … --use``, then
``envd build --output type=image,name=…,push=true``: the first build bootstraps the BuildKit
container, the image is pushed from inside it, removed locally, pulled back and run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from dc_helpers import docker_cli


def test_seed_scenario_on_docker_container_context(tmp_path: Path, docker_host: str,
                                                  ca_bundle: str, registry: str,
                                                  container_name: str,
                                                  builder_options: dict[str, str],
                                                  e2e: ModuleType) -> None:
    envd = e2e.Envd(tmp_path / "config", docker_host, ca_bundle)
    opts = [a for k, v in builder_options.items() for a in ("--builder-opt", f"{k}={v}")]
    envd.run("context", "create", "--name", "local-bk", "--builder", "docker-container",
             "--builder-address", container_name, *opts, "--use")
    assert "local-bk (current)" in envd.run("context", "ls").stdout
    mark = e2e.marker()
    context = e2e.write_environment(tmp_path / "env", mark=mark, registry=registry)
    image = f"{registry}/e2e-{mark}/seed:latest"
    try:
        proc = envd.build(context, "--output", f"type=image,name={image},push=true",
                          "--format", "json")
        result = json.loads(proc.stdout)
        assert result["pushed"] is True and result["destination"] == image, result
        assert f"BuildKit is running at docker-container://{container_name}" in proc.stderr
        labels = json.loads(docker_cli("inspect", "-f", "{{json .Config.Labels}}",
                                       container_name).stdout)
        assert labels["io.envd.builder"] == "docker-container"
        # Nothing of the host is bind-mounted into the daemon: only its cache volume.
        mounts = json.loads(docker_cli("inspect", "-f", "{{json .Mounts}}",
                                       container_name).stdout)
        assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/var/lib/buildkit")]
        e2e.remove_images(docker_host, image)
        e2e.docker("pull", "-q", image, docker_host=docker_host)
        e2e.check_image_contents(image, mark, docker_host=docker_host,
                             base_image=f"{registry}/python:3.11-bookworm")
        e2e.check_image_config(image, mark, docker_host=docker_host)
    finally:
        e2e.remove_images(docker_host, image)
