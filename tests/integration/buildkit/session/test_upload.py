"""Uploading local directories to a real buildkitd: filters and incremental transfers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from _daemon import solve

from envd_core.buildkit._pb import ops_pb2
from envd_core.buildkit.session import ExportTarget, LocalDir, Session
from envd_core.buildkit.session.core import new_id

pytestmark = pytest.mark.integration


def make_context(root: Path) -> None:
    files = {
        "app/main.py": "print('main')\n",
        "app/util.py": "X = 1\n",
        "data/big.bin": "x" * 200_000,
        "build/out.o": "obj",
        "logs/a.log": "log",
        "logs/keep.log": "keep",
        ".dockerignore": "build\nlogs\n!logs/keep.log\n**/*.tmp\n",
        "app/scratch.tmp": "tmp",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def context_transfers(session: Session) -> list[Any]:
    """FileSync calls for the full context (the frontend also fetches .dockerignore alone)."""
    return [t for t in session.transfers if t.dir_name == "context" and t.entries > 1]


def test_dockerfile_upload_excludes_then_resends_only_changed(
    buildkit: Any, tmp_path: Path, dockerfile_dir: Any
) -> None:
    ctx = tmp_path / "ctx"
    make_context(ctx)
    df = dockerfile_dir("FROM scratch\nCOPY . /\n")
    shared_key = "envd-test-" + new_id()

    def build(dest: Path) -> Session:
        session = Session(
            shared_key=shared_key,
            local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(df)},
            export=ExportTarget.directory(dest),
        )
        with session:
            solve(buildkit, session, exporters=[("local", {})])
        return session

    first = build(tmp_path / "out1")
    assert listing(tmp_path / "out1") == [
        ".dockerignore",
        "app",
        "app/main.py",
        "app/util.py",
        "data",
        "data/big.bin",
        "logs",
        "logs/keep.log",
    ]
    [upload] = context_transfers(first)
    assert set(upload.bytes_by_path) == {
        ".dockerignore",
        "app/main.py",
        "app/util.py",
        "data/big.bin",
        "logs/keep.log",
    }

    (ctx / "app" / "util.py").write_text("X = 2  # changed\n")
    second = build(tmp_path / "out2")
    [upload] = context_transfers(second)
    assert upload.bytes_by_path == {"app/util.py": len("X = 2  # changed\n")}
    assert upload.data_packets == 1
    assert (tmp_path / "out2" / "app" / "util.py").read_text() == "X = 2  # changed\n"
    assert (tmp_path / "out2" / "data" / "big.bin").stat().st_size == 200_000


def local_source_definition(name: str, attrs: dict[str, str]) -> ops_pb2.Definition:
    op = ops_pb2.Op(source=ops_pb2.SourceOp(identifier=f"local://{name}", attrs=attrs))
    raw = op.SerializeToString(deterministic=True)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    terminal = ops_pb2.Op(inputs=[ops_pb2.Input(digest=digest, index=0)])
    definition = ops_pb2.Definition()
    getattr(definition, "def").extend([raw, terminal.SerializeToString(deterministic=True)])
    return definition


def test_llb_local_source_with_daemon_patterns(buildkit: Any, tmp_path: Path) -> None:
    """Include/exclude patterns given in the LLB reach the session as FileSync metadata."""
    ctx = tmp_path / "ctx"
    make_context(ctx)
    definition = local_source_definition(
        "src",
        {
            "local.includepattern": json.dumps(["app", "logs"]),
            "local.excludepatterns": json.dumps(["**/*.tmp", "logs/a.log"]),
            "local.sharedkeyhint": "src",
            "local.unique": new_id(),
        },
    )
    dest = tmp_path / "out"
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"src": LocalDir(ctx, use_dockerignore=False)},
        export=ExportTarget.directory(dest),
    )
    with session:
        solve(buildkit, session, definition=definition, exporters=[("local", {})])
    assert listing(dest) == ["app", "app/main.py", "app/util.py", "logs", "logs/keep.log"]
