"""Registry credentials and build secrets served to a real buildkitd."""

from __future__ import annotations

import base64
import io
import ssl
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _daemon import SolveFailed, solve

from envd_core.buildkit.session import AuthProvider, ExportTarget, LocalDir, SecretSource, Session
from envd_core.buildkit.session.core import new_id

pytestmark = pytest.mark.integration


def push_build(channel: Any, ctx: Path, ref: str, auth: AuthProvider | None) -> dict:
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
        auth=auth,
    )
    with session:
        return solve(channel, session, exporters=[("image", {"name": ref, "push": "true"})])


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "payload.txt").write_text(new_id())  # unique content: a fresh blob every run
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY payload.txt /\n")
    return ctx


def test_push_to_auth_registry_with_docker_config(
    push_buildkit: Any, infra: dict[str, Any], context: Path, docker_config: Any
) -> None:
    registry = infra["AUTH_REGISTRY"]
    user, password = infra["AUTH_REGISTRY_USER"], infra["AUTH_REGISTRY_PASSWORD"]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    docker_config({"auths": {registry: {"auth": token}}})
    tag = new_id()[:10]
    ref = f"{registry}/envd-session-test:{tag}"

    response = push_build(push_buildkit, context, ref, AuthProvider.from_docker_config())

    request = urllib.request.Request(
        f"https://{registry}/v2/envd-session-test/manifests/{tag}",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json",
        },
        method="HEAD",
    )
    tls = ssl.create_default_context(cafile=infra["AUTH_REGISTRY_CA"])
    with urllib.request.urlopen(request, context=tls, timeout=30) as answer:
        assert answer.headers["Docker-Content-Digest"] == response["containerimage.digest"]


def test_push_without_credentials_fails_clearly(
    push_buildkit: Any, infra: dict[str, Any], context: Path, docker_config: Any
) -> None:
    docker_config({"auths": {}})
    ref = f"{infra['AUTH_REGISTRY']}/envd-session-test:{new_id()[:10]}"
    with pytest.raises(SolveFailed) as info:
        push_build(push_buildkit, context, ref, AuthProvider.from_docker_config())
    message = str(info.value).lower()
    assert "401" in message or "unauthorized" in message or "authorization" in message


def test_secret_readable_in_step_and_absent_from_image(
    buildkit: Any, infra: dict[str, Any], tmp_path: Path
) -> None:
    secret = "s3cr3t-" + new_id()
    (tmp_path / "token").write_text(secret)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {infra['IMAGE_BUSYBOX']}\n"
        'RUN --mount=type=secret,id=token [ "$(cat /run/secrets/token)" = "' + secret + '" ] '
        "&& echo verified > /proof\n"
        "RUN [ ! -e /run/secrets/token ]\n"
    )
    sink = io.BytesIO()
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
        secrets={"token": SecretSource.from_file(tmp_path / "token")},
        export=ExportTarget.file(sink),
    )
    with session:
        solve(buildkit, session, exporters=[("tar", {})])
    sink.seek(0)
    found_proof = False
    with tarfile.open(fileobj=sink) as tar:
        for member in tar.getmembers():
            assert "secrets/token" not in member.name or not member.isfile() or member.size == 0
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert secret.encode() not in data, member.name
                if member.name == "proof":
                    found_proof = data == b"verified\n"
    assert found_proof


def test_unknown_secret_fails_the_step(
    buildkit: Any, infra: dict[str, Any], tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {infra['IMAGE_BUSYBOX']}\nRUN --mount=type=secret,id=missing,required=true true\n"
    )
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
    )
    with session, pytest.raises(SolveFailed) as info:
        solve(buildkit, session, exporters=[])
    assert "missing" in str(info.value)
