"""Shell completion of context names through click's real completion protocol.

Completion runs on every Tab press, often on a machine where envd has never run: it must never
write the store, and it must read the store the user selected with ``ENVD_CONTEXT_STORE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: A context store plugin holding two fixed contexts; writing to it fails loudly.
FIXED_STORE = """
    import contextlib

    from envd_core import hookimpl
    from envd_core.contexts.model import Context, ContextSet
    from envd_core.contexts.store import ContextStore


    class FixedStore(ContextStore):
        name = "fixed"

        def load(self):
            contexts = ContextSet()
            for name in ("alpha", "beta"):
                contexts.add(Context(name=name, builder="tcp", builder_address="h:1"))
            contexts.current = "alpha"
            return contexts

        @contextlib.contextmanager
        def transaction(self):
            raise RuntimeError("completion must not write")
            yield


    @hookimpl
    def envd_context_stores():
        return [FixedStore]
"""


def complete(envd_script: str, words: str, *, env: dict[str, str] | None = None,
             pythonpath: Path | None = None) -> list[str]:
    """Run the installed ``envd`` as bash's completion function would; return its items."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    run_env = {**os.environ, **(env or {}), "_ENVD_COMPLETE": "bash_complete",
               "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    if pythonpath is not None:
        run_env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *sys.path])
    done = subprocess.run([envd_script], env=run_env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_fresh_machine_completes_default_and_writes_nothing(envd_script, envd_config_dir):
    assert not envd_config_dir.exists()
    assert complete(envd_script, "envd context use ") == ["plain,default"]
    assert complete(envd_script, "envd context rm --name d") == ["plain,default"]
    assert complete(envd_script, "envd context use x") == []
    # not even the directory or the lock file: a Tab press leaves no trace
    assert not envd_config_dir.exists()


def test_existing_store_is_read_and_left_byte_identical(envd_script, envd_config_dir):
    envd_config_dir.mkdir()
    store = envd_config_dir / "contexts.json"
    store.write_text('{"schema": 1, "current": "default", "contexts": ['
                     '{"name": "default", "builder": {"type": "moby-worker", "address": "e"}},'
                     '{"name": "remote-a", "builder": {"type": "tcp", "address": "h:1"}}]}')
    before = (store.read_bytes(), store.stat().st_mtime_ns)
    assert complete(envd_script, "envd context use re") == ["plain,remote-a"]
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before


def test_completion_honours_envd_context_store(envd_script, envd_config_dir, entry_point_site):
    site = entry_point_site("fixed-store", FIXED_STORE)
    env = {"ENVD_CONTEXT_STORE": "fixed"}
    assert complete(envd_script, "envd context use ", env=env, pythonpath=site) == [
        "plain,alpha", "plain,beta"]
    # the file store was not consulted, so it was not created either
    assert not envd_config_dir.exists()
    # a store no plugin provides completes nothing, silently
    assert complete(envd_script, "envd context use ", env={"ENVD_CONTEXT_STORE": "nope"}) == []


def test_completion_function_in_process_never_writes(envd_config_dir, monkeypatch):
    from envd_core.cli.context import complete_context_names

    items = complete_context_names(None, None, "")  # type: ignore[arg-type]
    assert [item.value for item in items] == ["default"]
    assert not envd_config_dir.exists()
    monkeypatch.setenv("ENVD_CONTEXT_STORE", "nope")
    assert complete_context_names(None, None, "") == []  # type: ignore[arg-type]


@pytest.mark.parametrize("store_name", ["", "file"])
def test_file_store_peek_is_read_only(envd_config_dir, monkeypatch, store_name):
    from envd_core.contexts.store import FileStore

    monkeypatch.setenv("ENVD_CONTEXT_STORE", store_name)
    store = FileStore()
    assert list(store.peek().contexts) == ["default"]
    assert store.peek().current == "default"
    assert not envd_config_dir.exists()
    store.load()  # load() is the writer: it creates the store on first use
    assert (envd_config_dir / "contexts.json").exists()
