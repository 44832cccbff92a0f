"""`--platform` with two platforms builds both, one after another, tags suffixed -os-arch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_envd_build_support import Envd, docker, marker, remove_images


def test_two_platforms_build_two_images(tmp_path: Path, infra: dict[str, Any], docker_host: str,
                                        ca_bundle: str, buildkit_unix: str) -> None:
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    envd.run("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
             buildkit_unix, "--use")
    mark = marker()
    project = tmp_path / "plat"
    project.mkdir()
    # busybox-static runs natively as linux/386 on this amd64 kernel (the worker lists both)
    (project / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{infra["IMAGE_BUSYBOX"]}")\n'
        f'    run(commands=["echo {mark} > /marker"])\n'
    )
    name = f"{infra['REGISTRY']}/e2e-{mark}/plat:1"
    proc = envd.build(project, "--platform", "linux/amd64,linux/386", "--format", "json",
                      "--output", f"type=image,name={name},push=true")
    rows = json.loads(proc.stdout)
    assert [r["destination"] for r in rows] == [f"{name}-linux-amd64", f"{name}-linux-386"]
    assert all(r["pushed"] for r in rows)
    try:
        for arch in ("amd64", "386"):
            ref = f"{name}-linux-{arch}"
            docker("pull", "-q", ref, docker_host=docker_host)
            inspected = json.loads(docker("image", "inspect", ref, docker_host=docker_host).stdout)
            assert inspected[0]["Architecture"] == arch
    finally:
        remove_images(docker_host, f"{name}-linux-amd64", f"{name}-linux-386")


def test_two_platforms_into_one_file_is_refused(tmp_path: Path, docker_host: str,
                                                ca_bundle: str, buildkit_unix: str) -> None:
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    envd.run("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
             buildkit_unix, "--use")
    project = tmp_path / "p"
    project.mkdir()
    (project / "build.envd").write_text("def build():\n    base(image=\"x\")\n")
    proc = envd.build(project, "--platform", "linux/amd64,linux/arm64", "--output",
                      f"type=tar,dest={tmp_path / 'x.tar'}", check=False)
    assert proc.returncode == 2  # a usage error
    assert proc.stderr.startswith("envd: several --platform values"), proc.stderr
