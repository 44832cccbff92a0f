"""The session on dockerd 20.10's embedded BuildKit (v0.8), through the high-level client.

This exercises the oldest daemon we support (no Exporters list, 1 s health checks, the
``override-excludes`` metadata) and the BK-core client + /grpc upgrade bridge end to end.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from envd_core.buildkit.exporters import Exporter
from envd_core.buildkit.session import ExportTarget, LocalDir, Session
from envd_core.buildkit.session.core import new_id

pytestmark = pytest.mark.integration


def test_upload_incremental_and_local_export_on_dockerd(
    dockerd_bk: Any, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "pkg").mkdir(parents=True)
    (ctx / "pkg" / "a.py").write_text("A = 1\n")
    (ctx / "pkg" / "b.py").write_text("B = 1\n")
    (ctx / "secret.env").write_text("TOKEN=x\n")
    (ctx / ".dockerignore").write_text("*.env\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /app/\n")
    shared_key = "envd-test-" + new_id()

    def build(dest: Path) -> Session:
        session = Session(
            shared_key=shared_key,
            local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
            export=ExportTarget.directory(dest),
        )
        with session:
            dockerd_bk.solve(
                None,
                frontend="dockerfile.v0",
                exporters=[Exporter("local")],
                session=session,
            )
        return session

    build(tmp_path / "out1")
    app = tmp_path / "out1" / "app"
    assert sorted(p.name for p in app.iterdir()) == [".dockerignore", "Dockerfile", "pkg"]
    assert (app / "pkg" / "a.py").read_text() == "A = 1\n"

    (ctx / "pkg" / "b.py").write_text("B = 2\n")
    second = build(tmp_path / "out2")
    uploads = [t for t in second.transfers if t.dir_name == "context" and t.entries > 1]
    assert [u.bytes_by_path for u in uploads] == [{"pkg/b.py": 6}]
    assert (tmp_path / "out2" / "app" / "pkg" / "b.py").read_text() == "B = 2\n"


def test_tar_export_on_dockerd(dockerd_bk: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello").write_text("hi\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    out = tmp_path / "fs.tar"
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
        export=ExportTarget.file(out),
    )
    with session:
        dockerd_bk.solve(
            None, frontend="dockerfile.v0", exporters=[Exporter("tar")], session=session
        )
    with tarfile.open(out) as tar:
        member = tar.extractfile("hello")
        assert member is not None and member.read() == b"hi\n"
