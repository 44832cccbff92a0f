"""Each base image runs; HTTPS works from a container only with the host CA bundle mounted."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from infra_helpers import PRIVILEGED_FLAGS, sh, unique

pytestmark = pytest.mark.integration

FETCH_PYPI = ("import urllib.request; "
              "print(urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=60).status)")


def test_debian_image_runs(infra: dict[str, Any]) -> None:
    out = sh("docker", "run", "--rm", infra["IMAGE_DEBIAN"], "cat", "/etc/os-release").stdout
    assert 'VERSION_CODENAME=bookworm' in out


def test_busybox_image_runs_with_relative_applets(infra: dict[str, Any]) -> None:
    out = sh("docker", "run", "--rm", infra["IMAGE_BUSYBOX"], "sh", "-c",
             "readlink /bin/ls; echo ok").stdout.split()
    assert out == ["busybox", "ok"]


def test_python_image_behaves_like_docker_hubs(infra: dict[str, Any]) -> None:
    # `python` exists and pip may install system-wide (no PEP 668 marker), as in
    # python:3.11-bookworm, so tools that run `python -m pip install` work unchanged.
    out = sh("docker", "run", "--rm", infra["IMAGE_PYTHON"], "sh", "-c",
             "python -c 'import sys, venv, pip; print(sys.version_info[:2])' && "
             "ls /usr/lib/python3.11/EXTERNALLY-MANAGED 2>/dev/null || echo unmanaged").stdout
    assert out.split("\n")[:2] == ["(3, 11)", "unmanaged"]


@pytest.mark.parametrize("key", ["IMAGE_DEBIAN", "IMAGE_BUSYBOX", "IMAGE_PYTHON",
                                 "BUILDKIT_IMAGE"])
def test_images_carry_their_recipe_label(infra: dict[str, Any], key: str) -> None:
    # The label lets `infra up` notice an image made by an older recipe and rebuild it.
    labels = json.loads(sh("docker", "image", "inspect", "--format",
                           "{{json .Config.Labels}}", infra[key]).stdout)
    assert len(labels["org.envd-infra.recipe"]) == 16


def test_https_from_container_needs_the_ca_bundle(infra: dict[str, Any]) -> None:
    without = sh("docker", "run", "--rm", "--network", "host", infra["IMAGE_PYTHON"],
                 "python3", "-c", FETCH_PYPI, check=False, timeout=120)
    assert without.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in without.stderr
    bundle = infra["CA_BUNDLE"]
    with_ca = sh("docker", "run", "--rm", "--network", "host", "-v",
                 f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro", infra["IMAGE_PYTHON"],
                 "python3", "-c", FETCH_PYPI, timeout=120)
    assert with_ca.stdout.strip() == "200"


def test_buildkit_image_serves_builds(infra: dict[str, Any]) -> None:
    image = json.loads(sh("docker", "image", "inspect", infra["BUILDKIT_IMAGE"]).stdout)[0]
    assert image["Config"]["Entrypoint"] == ["buildkitd"]
    name = unique("envd-infra-smoke-buildkit")
    sh("docker", "run", "-d", "--name", name, *PRIVILEGED_FLAGS, infra["BUILDKIT_IMAGE_REF"],
       "--oci-worker-net=host")
    try:
        for _ in range(150):  # buildkitd needs a moment to listen inside the container
            probe = sh("docker", "exec", name, "buildctl", "debug", "workers", check=False)
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        assert probe.returncode == 0, probe.stderr + sh("docker", "logs", name).stderr[-800:]
        assert "linux/amd64" in probe.stdout
    finally:
        sh("docker", "rm", "-f", name, check=False)


def test_hostca_python_image_reaches_pypi_without_a_mount(infra: dict[str, Any]) -> None:
    out = sh("docker", "run", "--rm", "--network", "host", infra["IMAGE_PYTHON_HOSTCA"],
             "python3", "-c", FETCH_PYPI, timeout=120).stdout
    assert out.strip() == "200"


def test_sshd_image_holds_upstreams_static_envd_sshd(infra: dict[str, Any]) -> None:
    # Packed like tensorchord/envd-sshd-from-scratch: dev-image builds copy /usr/bin/envd-sshd
    # out of it, so the path and a binary that runs without any library are the contract.
    out = sh("docker", "run", "--rm", infra["SSHD_IMAGE"], "--version").stdout.split()
    assert out == ["envd-sshd", "github.com/tensorchord/envd", "v1.3.4"]
    layers = json.loads(sh("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}",
                           infra["SSHD_IMAGE"]).stdout)
    assert len(layers) == 1
    container = sh("docker", "create", infra["SSHD_IMAGE"]).stdout.strip()
    try:
        files = sh("sh", "-c", f"docker export {container} | tar -t", timeout=60).stdout.split()
    finally:
        sh("docker", "rm", container)
    assert "usr/bin/envd-sshd" in files
    assert not [f for f in files if f.startswith(("bin/", "lib", "usr/lib"))]
