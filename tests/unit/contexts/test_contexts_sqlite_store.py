"""The SQLite context store: the store contract, a shared file, 50 concurrent writers, kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from envd_core.contexts.model import Context
from envd_core.contexts.sqlite_store import SqliteStore
from envd_core.errors import StoreError
from envd_core.testing import StoreContract, StubBuilder, StubRunner, make_plugin


class TestSqliteStoreContract(StoreContract):
    store_cls = SqliteStore


def test_selected_by_env_through_the_cli(cli, register_plugin, envd_config_dir, monkeypatch,
                                         tmp_path):
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner]))
    shared = tmp_path / "shared" / "team.db"
    monkeypatch.setenv("ENVD_CONTEXT_STORE", "sqlite")
    monkeypatch.setenv("ENVD_SQLITE_STORE", str(shared))
    created = cli("context", "create", "farm", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", StubRunner.name, "--use")
    assert created.exit_code == 0, created
    listed = cli("context", "ls", "--format", "json")
    assert [(r["context"], r["current"]) for r in json.loads(listed.stdout)] == [
        ("default", False), ("farm", True)]
    assert shared.exists() and not (envd_config_dir / "contexts.json").exists()
    db = sqlite3.connect(shared)
    assert [row[0] for row in db.execute("SELECT name FROM contexts ORDER BY position")] == [
        "default", "farm"]
    db.close()


def test_current_context_is_per_user(envd_config_dir, monkeypatch):
    store = SqliteStore(envd_config_dir)
    with store.transaction() as contexts:
        contexts.add(Context(name="farm", builder="tcp", builder_address="h:1"))
        contexts.use("farm")
    monkeypatch.setattr("envd_core.contexts.sqlite_store._user", lambda: "colleague")
    theirs = SqliteStore(envd_config_dir).load()
    assert "farm" in theirs.contexts  # shared
    assert theirs.current == "default"  # the store's first current, not my choice


def test_foreign_sqlite_file_is_refused_and_kept(envd_config_dir, monkeypatch, tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    before = other.read_bytes()
    monkeypatch.setenv("ENVD_SQLITE_STORE", str(other))
    with pytest.raises(StoreError, match="not an envd context store"):
        SqliteStore(envd_config_dir).load()
    assert other.read_bytes() == before


WRITER = """
    import sys
    from pathlib import Path
    from envd_core.contexts.sqlite_store import SqliteStore
    from envd_core.contexts.model import Context

    with SqliteStore(Path(sys.argv[1])).transaction() as contexts:
        contexts.add(Context(name=sys.argv[2], builder="tcp", builder_address="h:1"))
"""


def test_fifty_concurrent_writers_lose_nothing(envd_config_dir, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    procs = [subprocess.Popen([sys.executable, str(script), str(envd_config_dir), f"w-{i:02d}"],
                              stderr=subprocess.PIPE, text=True) for i in range(50)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    names = list(SqliteStore(envd_config_dir).load().contexts)
    assert sorted(names) == ["default", *(f"w-{i:02d}" for i in range(50))]


LOOP_WRITER = """
    import sys
    from pathlib import Path
    from envd_core.contexts.sqlite_store import SqliteStore
    from envd_core.contexts.model import Context

    store = SqliteStore(Path(sys.argv[1]))
    start = sum(1 for name in store.load().contexts if name.startswith("loop-"))
    print("ready", flush=True)
    for i in range(start, 100000):
        with store.transaction() as contexts:
            contexts.add(Context(name=f"loop-{i}", builder="tcp", builder_address=f"h:{i}"))
"""


def test_sigkill_at_random_points_leaves_old_or_new_state(envd_config_dir, tmp_path):
    script = tmp_path / "loop_writer.py"
    script.write_text(textwrap.dedent(LOOP_WRITER))
    rng = random.Random(11)
    written: list[int] = []
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, str(script), str(envd_config_dir)],
                                stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        contexts = SqliteStore(envd_config_dir).load()
        loop = [n for n in contexts.contexts if n.startswith("loop-")]
        assert loop == [f"loop-{i}" for i in range(len(loop))]
        assert contexts.contexts["default"].builder == "moby-worker"
        written.append(len(loop))
    assert written == sorted(written)
    assert written[-1] > 0, "the writer never committed: the test proved nothing"
