"""Exports streamed back through the session: tar, oci (tarball), local directory."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from _daemon import solve

from envd_core.buildkit.session import ExportTarget, LocalDir, Session
from envd_core.buildkit.session.core import new_id

pytestmark = pytest.mark.integration

DOCKERFILE = "FROM scratch\nCOPY hello.txt /etc/hello.txt\nCOPY tool /usr/bin/tool\n"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from envd\n")
    (ctx / "tool").write_text("#!/bin/sh\necho tool\n")
    (ctx / "tool").chmod(0o755)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def build(channel: Any, ctx: Path, exporter: str, target: ExportTarget, **attrs: str) -> dict:
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
        export=target,
    )
    with session:
        return solve(channel, session, exporters=[(exporter, attrs)])


def test_tar_export(buildkit: Any, context: Path, tmp_path: Path) -> None:
    out = tmp_path / "rootfs.tar"
    build(buildkit, context, "tar", ExportTarget.file(out))
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"etc/hello.txt", "usr/bin/tool"} <= names
        hello = tar.extractfile("etc/hello.txt")
        assert hello is not None and hello.read() == b"hello from envd\n"
        assert tar.getmember("usr/bin/tool").mode & 0o111


def test_oci_export_to_file_object(buildkit: Any, context: Path) -> None:
    sink = io.BytesIO()
    response = build(buildkit, context, "oci", ExportTarget.file(sink), name="envd/test:oci")
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        [descriptor] = index["manifests"]
        assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert descriptor["digest"] == response["containerimage.digest"]
        algo, hexdigest = descriptor["digest"].split(":")
        manifest = json.load(tar.extractfile(f"blobs/{algo}/{hexdigest}"))  # type: ignore[arg-type]
        assert len(manifest["layers"]) == 2
        for layer in manifest["layers"]:
            assert f"blobs/{layer['digest'].replace(':', '/')}" in names


def test_docker_export_has_manifest_json(buildkit: Any, context: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    build(buildkit, context, "docker", ExportTarget.file(out), name="envd/test:docker")
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["envd/test:docker"]


def test_local_export_keeps_modes(buildkit: Any, context: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local-out"
    build(buildkit, context, "local", ExportTarget.directory(dest))
    assert (dest / "etc" / "hello.txt").read_text() == "hello from envd\n"
    assert (dest / "usr" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
