"""Push/pull through both registries; the auth registry refuses anonymous and untrusted use."""

from __future__ import annotations

import base64
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from infra_helpers import sh, unique

pytestmark = pytest.mark.integration


def _get(url: str, *, ca: str | None, auth: tuple[str, str] | None = None) -> int:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10, context=ctx) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_plain_registry_push_pull(infra: dict[str, Any]) -> None:
    ref = f"{infra['REGISTRY']}/smoke/busybox:{unique('t')}"
    sh("docker", "tag", infra["IMAGE_BUSYBOX"], ref)
    sh("docker", "push", ref)
    sh("docker", "rmi", ref)
    sh("docker", "pull", ref)
    assert sh("docker", "run", "--rm", ref, "echo", "pulled").stdout.strip() == "pulled"
    sh("docker", "rmi", ref)


def test_auth_registry_api_needs_credentials_and_ca(auth_registry: Any) -> None:
    url = f"https://{auth_registry.address}/v2/"
    assert _get(url, ca=auth_registry.ca) == 401
    assert _get(url, ca=auth_registry.ca, auth=(auth_registry.user, "wrong")) == 401
    assert _get(url, ca=auth_registry.ca, auth=(auth_registry.user, auth_registry.password)) == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url, ca=None)  # the system trust store does not know the infra's CA


def test_auth_registry_push_pull_with_and_without_login(infra: dict[str, Any],
                                                        auth_registry: Any,
                                                        tmp_path: Path) -> None:
    ref = f"{auth_registry.address}/smoke/busybox:{unique('t')}"
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    sh("docker", "tag", infra["IMAGE_BUSYBOX"], ref)
    try:
        anonymous = sh("docker", "push", ref, check=False, env=env)
        assert anonymous.returncode != 0
        assert "no basic auth credentials" in anonymous.stderr + anonymous.stdout
        login = sh("sh", "-c", f'printf %s "$PW" | docker login -u {auth_registry.user} '
                   f"--password-stdin {auth_registry.address}",
                   env={**env, "PW": auth_registry.password})
        assert "Login Succeeded" in login.stdout
        sh("docker", "push", ref, env=env)
        sh("docker", "rmi", ref)
        sh("docker", "pull", ref, env=env)
    finally:
        sh("docker", "rmi", ref, check=False)
