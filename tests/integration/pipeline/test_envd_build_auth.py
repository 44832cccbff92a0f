"""``envd build`` pushing to a registry that needs credentials (htpasswd + TLS).

Credentials come from the docker config (``DOCKER_CONFIG``), as upstream envd and buildx take
them; the shared buildkitd trusts the registry's CA through its own config (scripts/infra).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path

import pytest
from test_envd_build_support import Envd, assert_one_error_line, marker, write_environment

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")


class _EnvdWithDockerConfig(Envd):
    """Envd whose subprocess sees a private ``DOCKER_CONFIG``."""

    docker_config: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.docker_config is not None:
            env["DOCKER_CONFIG"] = str(self.docker_config)
        return env


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str
         ) -> _EnvdWithDockerConfig:
    """The CLI on the tcp builder, with an empty docker config of its own."""
    cli = _EnvdWithDockerConfig(tmp_path / "config", docker_host, ca_bundle)
    cli.docker_config = tmp_path / "docker-config"
    cli.docker_config.mkdir()
    cli.run("context", "create", "--name", "tcp-auth", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


def _token(auth_registry: object) -> str:
    user, password = auth_registry.user, auth_registry.password  # type: ignore[attr-defined]
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_push_to_auth_registry_with_docker_config(envd: _EnvdWithDockerConfig, tmp_path: Path,
                                                  registry: str, auth_registry: object) -> None:
    """The pushed manifest is in the registry with the digest envd reported."""
    address = auth_registry.address  # type: ignore[attr-defined]
    token = _token(auth_registry)
    assert envd.docker_config is not None
    (envd.docker_config / "config.json").write_text(
        json.dumps({"auths": {address: {"auth": token}}}))
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    repo, tag = f"e2e-{mark}/auth", "1"
    proc = envd.build(context, "--format", "json", "--output",
                      f"type=image,name={address}/{repo}:{tag},push=true")
    result = json.loads(proc.stdout)
    assert result["pushed"] is True and result["digest"], result

    request = urllib.request.Request(
        f"https://{address}/v2/{repo}/manifests/{tag}", method="HEAD",
        headers={"Authorization": f"Basic {token}", "Accept": MANIFEST_TYPES})
    tls = ssl.create_default_context(cafile=auth_registry.ca)  # type: ignore[attr-defined]
    with urllib.request.urlopen(request, context=tls, timeout=30) as answer:
        assert answer.headers["Docker-Content-Digest"] == result["digest"]


def test_push_without_credentials_is_one_clear_line(envd: _EnvdWithDockerConfig,
                                                    tmp_path: Path, registry: str,
                                                    auth_registry: object) -> None:
    """No credentials for the registry: the build fails with one line that says so."""
    address = auth_registry.address  # type: ignore[attr-defined]
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    proc = envd.build(context, "--output",
                      f"type=image,name={address}/e2e-{mark}/auth:1,push=true", check=False)
    line = assert_one_error_line(proc)
    assert any(word in line.lower() for word in ("401", "unauthorized", "authoriz")), line
    assert "docker login" in proc.stderr, proc.stderr
