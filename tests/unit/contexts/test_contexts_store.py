"""The embedded JSON file store: location, permissions, corruption, concurrency, crash safety."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from envd_core.contexts import store as store_module
from envd_core.contexts.model import Context
from envd_core.contexts.store import SCHEMA_VERSION, FileStore, config_dir
from envd_core.errors import StoreError
from envd_core.testing import StoreContract, StubBuilder, StubRunner, assert_one_error, make_plugin


class TestFileStoreContract(StoreContract):
    store_cls = FileStore


@pytest.fixture
def stub_cli(cli, register_plugin):
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner]), name="stubs")
    return cli


def create_args(name: str) -> list[str]:
    return ["context", "create", "--name", name, "--builder", StubBuilder.name,
            "--builder-address", "x", "--runner", StubRunner.name]


# -- location --------------------------------------------------------------------------------
def test_config_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ENVD_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "envd"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "envd"
    monkeypatch.setenv("ENVD_CONFIG_DIR", str(tmp_path / "explicit"))
    assert config_dir() == tmp_path / "explicit"


def test_cli_writes_where_xdg_config_home_says(stub_cli, monkeypatch, tmp_path):
    monkeypatch.delenv("ENVD_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert stub_cli(*create_args("x")).exit_code == 0
    stored = json.loads((tmp_path / "xdg" / "envd" / "contexts.json").read_text())
    assert [c["name"] for c in stored["contexts"]] == ["default", "x"]


# -- permissions and format ------------------------------------------------------------------
def test_modes_and_schema(stub_cli, envd_config_dir):
    os.umask(0o022)
    assert stub_cli(*create_args("x")).exit_code == 0
    assert stat.S_IMODE(envd_config_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((envd_config_dir / "contexts.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((envd_config_dir / "contexts.json.lock").stat().st_mode) == 0o600
    doc = json.loads((envd_config_dir / "contexts.json").read_text())
    assert doc["schema"] == SCHEMA_VERSION == 1
    assert doc["current"] == "default"


def test_reads_do_not_rewrite_the_file(stub_cli, envd_config_dir):
    assert stub_cli("context", "ls").exit_code == 0
    path = envd_config_dir / "contexts.json"
    before = path.stat()
    for args in (["context", "ls"], ["context", "show"], ["context", "use", "default"]):
        assert stub_cli(*args).exit_code == 0
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# -- corruption ------------------------------------------------------------------------------
CORRUPT = {
    "not-json": b"{\"schema\": 1, \"contexts\": [",
    "not-utf8": b"\xff\xfe\x00garbage",
    "no-list": b'{"schema": 1, "contexts": {}}',
    "future-schema": b'{"schema": 99, "contexts": []}',
    "no-schema": b'{"contexts": []}',
    "bad-entry": b'{"schema": 1, "contexts": [{"name": 3}]}',
    "twice": (b'{"schema": 1, "contexts": [{"name": "a", "builder": {"type": "t", '
              b'"address": "x"}}, {"name": "a", "builder": {"type": "t", "address": "y"}}]}'),
    "empty": b"",
    # issue 15: hand-edited names were listed (and an ESC byte echoed to the terminal)
    "path-name": b'{"schema": 1, "contexts": [{"name": "../x", "builder": {"type": "t", '
                 b'"address": "x"}}]}',
    "escape-name": b'{"schema": 1, "contexts": [{"name": "a\\u001b[31m", "builder": '
                   b'{"type": "t", "address": "x"}}]}',
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=list(CORRUPT))
def test_corrupt_file_is_named_and_left_byte_identical(stub_cli, envd_config_dir, content):
    envd_config_dir.mkdir(mode=0o700)
    path = envd_config_dir / "contexts.json"
    path.write_bytes(content)
    for args in (["context", "ls"], create_args("x"), ["context", "use", "default"],
                 ["context", "rm", "default"], ["context", "show"]):
        stderr = assert_one_error(stub_cli(*args))
        assert f"`{path}`" in stderr
        assert path.read_bytes() == content
    # completion must stay silent, never a traceback into the shell
    from envd_core.cli.context import complete_context_names

    assert complete_context_names(None, None, "") == []  # type: ignore[arg-type]


# -- upstream's gob file ---------------------------------------------------------------------
def test_upstream_gob_contexts_file_is_never_touched(stub_cli, envd_config_dir):
    envd_config_dir.mkdir(mode=0o700)
    gob = envd_config_dir / "contexts"
    payload = random.Random(2).randbytes(4096)
    gob.write_bytes(payload)
    os.chmod(gob, 0o644)
    before = gob.stat()
    for args in (["context", "ls"], create_args("x"), ["context", "use", "x"],
                 ["context", "update", "x", "--description", "d"],
                 ["context", "use", "default"], ["context", "rm", "x"]):
        assert stub_cli(*args).exit_code == 0
    after = gob.stat()
    assert gob.read_bytes() == payload
    assert (after.st_ino, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino, before.st_mtime_ns, 0o644)
    assert sorted(p.name for p in envd_config_dir.iterdir()) == [
        "contexts", "contexts.json", "contexts.json.lock"]


# -- locking ---------------------------------------------------------------------------------
def test_lock_held_elsewhere_gives_a_clear_error(stub_cli, envd_config_dir, monkeypatch):
    assert stub_cli("context", "ls").exit_code == 0
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT", 0.05)
    fd = os.open(envd_config_dir / "contexts.json.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stderr = assert_one_error(stub_cli(*create_args("x")))
        assert "is locked by another envd process" in stderr
    finally:
        os.close(fd)
    assert stub_cli(*create_args("x")).exit_code == 0


# -- many processes at once ------------------------------------------------------------------
PLUGIN = """
    from envd_core import hookimpl
    from envd_core.testing import StubBuilder, StubRunner

    @hookimpl
    def envd_builder_types():
        return [StubBuilder]

    @hookimpl
    def envd_runner_types():
        return [StubRunner]
"""


def test_twenty_processes_create_at_once(entry_point_site, envd_script, envd_config_dir):
    site = entry_point_site("stubs", PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
           "ENVD_PLUGINS": "stubs"}
    procs = [
        subprocess.Popen([envd_script, *create_args(f"proc-{i:02d}")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(20)
    ]
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert err == f"Context proc-{i:02d} is created\n"
    doc = json.loads((envd_config_dir / "contexts.json").read_text())
    names = [c["name"] for c in doc["contexts"]]
    assert sorted(names) == ["default", *(f"proc-{i:02d}" for i in range(20))]
    assert doc["current"] == "default"
    assert not list(envd_config_dir.glob("*.tmp"))


# -- crash safety ----------------------------------------------------------------------------
SLOW_WRITER = """
    import os, sys, time
    from pathlib import Path
    from envd_core.contexts import store
    from envd_core.contexts.model import Context

    real_replace = os.replace

    def slow_replace(src, dst):
        # the temp file is written and fsynced; stop right before the rename
        print("between-write-and-rename", flush=True)
        time.sleep(120)
        real_replace(src, dst)

    os.replace = slow_replace
    with store.FileStore(Path(sys.argv[1])).transaction() as contexts:
        contexts.add(Context(name="new", builder="tcp", builder_address="h:1"))
"""


def test_sigkill_between_write_and_rename_keeps_the_old_file(stub_cli, envd_config_dir,
                                                             tmp_path):
    assert stub_cli(*create_args("old")).exit_code == 0
    path = envd_config_dir / "contexts.json"
    old = path.read_bytes()
    script = tmp_path / "slow_writer.py"
    script.write_text(textwrap.dedent(SLOW_WRITER))
    proc = subprocess.Popen([sys.executable, str(script), str(envd_config_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "between-write-and-rename\n"
        assert list(envd_config_dir.glob(".contexts.json.*.tmp")), "killed before the temp file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == old
    # the stray temp file and the dead process's lock do not break the next commands
    listed = stub_cli("context", "ls", "--format", "json")
    assert listed.exit_code == 0, listed
    assert [r["context"] for r in json.loads(listed.stdout)] == ["default", "old"]
    assert stub_cli(*create_args("after")).exit_code == 0
    # ... and the next write cleans the stray temp file up
    assert not list(envd_config_dir.glob(".contexts.json.*.tmp"))


LOOP_WRITER = """
    import sys
    from pathlib import Path
    from envd_core.contexts.store import FileStore
    from envd_core.contexts.model import Context

    store = FileStore(Path(sys.argv[1]))
    start = sum(1 for name in store.load().contexts if name.startswith("loop-"))
    print("ready", flush=True)
    for i in range(start, 100000):
        with store.transaction() as contexts:
            contexts.add(Context(name=f"loop-{i}", builder="tcp", builder_address=f"h:{i}"))
"""


def test_sigkill_at_random_points_leaves_old_or_new_state(envd_config_dir, tmp_path):
    script = tmp_path / "loop_writer.py"
    script.write_text(textwrap.dedent(LOOP_WRITER))
    rng = random.Random(7)
    written: list[int] = []
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, str(script), str(envd_config_dir)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        contexts = FileStore(envd_config_dir).load()  # parses: never torn
        loop = [n for n in contexts.contexts if n.startswith("loop-")]
        # every run continues where the last one was killed: the file always holds default
        # plus a gap-free run of loop-N, whatever instant the kill hit
        assert loop == [f"loop-{i}" for i in range(len(loop))]
        assert contexts.contexts["default"].builder == "moby-worker"
        written.append(len(loop))
    assert written == sorted(written)  # no kill ever lost what an earlier run had committed
    assert isinstance(FileStore(envd_config_dir).load().contexts["default"], Context)


def test_store_error_type(envd_config_dir):
    envd_config_dir.mkdir()
    (envd_config_dir / "contexts.json").write_text("[]")
    with pytest.raises(StoreError, match="is corrupt"):
        FileStore(envd_config_dir).load()
