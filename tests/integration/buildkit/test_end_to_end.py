"""Both halves together: BuildkitClient.solve driving a Session (upload, secret, export)."""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest

from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.exporters import Exporter
from envd_core.buildkit.progress import BuildTrace
from envd_core.buildkit.session import ExportTarget, LocalDir, SecretSource, Session


def _context(tmp_path: Path, token: str) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "app.txt").write_text(f"app {token}\n")
    (ctx / "secret.key").write_text("never upload me\n")
    (ctx / ".dockerignore").write_text("*.key\n")
    return ctx


def _graph(image: str, token: str) -> llb.State:
    ctx = llb.local("context", shared_key_hint="e2e")
    run = llb.image(image).run(
        "cat /ctx/src/app.txt > /out/app.txt; ls /ctx > /out/listing; "
        "wc -c < /run/secrets/tok | tr -d ' ' > /out/secret-len",
        mounts=[
            llb.bind("/ctx", ctx, readonly=True),
            llb.bind("/out", llb.scratch()),
            llb.secret("/run/secrets/tok", "tok"),
        ],
        name=f"use context {token}",
    )
    return run.get_mount("/out")


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {
            m.name.lstrip("./"): tf.extractfile(m).read()  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.isfile()
        }


@pytest.mark.parametrize("daemon", ["buildkitd", "dockerd"])
def test_upload_secret_and_tar_export(
    daemon: str,
    bk: BuildkitClient,
    dockerd_bk: BuildkitClient,
    infra: dict[str, Any],
    tmp_path: Path,
) -> None:
    client = bk if daemon == "buildkitd" else dockerd_bk
    token = secrets.token_hex(6)
    out = io.BytesIO()
    session = Session(
        shared_key=f"e2e-{token}",
        local_dirs={"context": LocalDir(_context(tmp_path, token))},
        secrets={"tok": SecretSource.from_bytes(b"s3cr3t")},
        export=ExportTarget.file(out),
    )
    trace = BuildTrace()
    client.solve(
        _graph(infra["IMAGE_BUSYBOX"], token).to_definition(),
        exporters=[Exporter.tar()],
        session=session,
        on_status=trace.update,
    )
    files = _members(out.getvalue())
    assert files["app.txt"] == f"app {token}\n".encode()
    assert files["listing"].split() == [b"src"]  # .dockerignore kept secret.key out
    assert files["secret-len"].strip() == b"6"
    assert b"s3cr3t" not in out.getvalue()  # the secret itself is not in the export
    assert any(s.name == f"use context {token}" and s.completed for s in trace.steps.values())


def test_local_export_to_directory(
    bk: BuildkitClient, infra: dict[str, Any], tmp_path: Path
) -> None:
    token = secrets.token_hex(6)
    dest = tmp_path / "out"
    st = llb.scratch().mkdir("/d").mkfile("/d/f", token).mkfile("/top", "t")
    with Session(shared_key="e2e-local", export=ExportTarget.directory(dest)) as session:
        bk.solve(st.to_definition(), exporters=[Exporter.local()], session=session)
    assert (dest / "d" / "f").read_text() == token
    assert (dest / "top").read_text() == "t"
