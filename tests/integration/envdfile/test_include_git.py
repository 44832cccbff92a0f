"""``include(git=...)`` over the git wire protocol: a real ``git daemon`` on 127.0.0.1.

The fixture starts ``git daemon`` on a free port of its own (git ships it; scripts/setup installs
git) and stops it by its pid. Upstream's ``examples/include_pkg`` shape: a module of functions.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.errors import BuildFileError

pytestmark = pytest.mark.integration


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A served bare repository ``envdlib.git`` with tag v1: its ``git://`` URL, the daemon."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "tensorboard.envd").write_text(textwrap.dedent("""\
        def tensorboard(host_port=6006):
            install.python_packages(name=["tensorboard"])
            runtime.expose(envd_port=6006, host_port=host_port, service="tensorboard")
        """))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "v1")
    git(work, "tag", "v1")
    served = tmp_path / "served"
    served.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(served / "envdlib.git"))
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
         "--listen=127.0.0.1", f"--port={port}", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"git daemon did not listen on {port}") from None
                time.sleep(0.1)
        yield f"git://127.0.0.1:{port}/envdlib.git", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def git_server(git_daemon: tuple[str, subprocess.Popen[bytes]]) -> str:
    return git_daemon[0]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENVD_INCLUDE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_build(tmp_path: Path, text: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "build.envd").write_text(textwrap.dedent(text))
    return ctx


def load_fails(ctx: Path) -> BuildFileError:
    with pytest.raises(BuildFileError) as info:
        load_build(ctx)
    return info.value


def test_include_over_git_daemon_compiles(tmp_path: Path, git_server: str, cache: Path) -> None:
    ctx = write_build(tmp_path, f"""\
        # syntax=v1
        envdlib = include(git="{git_server}", ref="v1")

        def build():
            base(image="127.0.0.1:5000/python:3.11-bookworm", dev=False)
            envdlib.tensorboard(host_port=8888)
        """)
    graph = load_build(ctx)
    assert graph.python_packages == [["tensorboard"]]
    compiled = compile_graph(graph, options=CompileOptions(context_dir=ctx))
    assert b"tensorboard" in compiled.dump_llb()
    port = git_server.split(":")[2].split("/")[0]
    assert (cache / f"git___127.0.0.1_{port}_envdlib.git" / "repo.git").is_dir()


def test_cached_tag_survives_the_server_going_away(
        tmp_path: Path, git_daemon: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, daemon = git_daemon
    ctx = write_build(tmp_path, f"""\
        lib = include(git="{url}", ref="v1")
        def build():
            lib.tensorboard()
        """)
    load_build(ctx)
    daemon.terminate()
    daemon.wait(timeout=10)
    # the same tag again, the server gone: served from the cache, offline
    assert load_build(ctx).python_packages == [["tensorboard"]]
    # never fetched, and nothing listens: one line at the call
    unreachable = url.replace(url.split(":")[2].split("/")[0], str(free_port()))
    ctx2 = write_build(tmp_path / "other", f"""\
        lib = include(git="{unreachable}")
        def build():
            lib.tensorboard()
        """)
    err = load_fails(ctx2)
    assert (err.file, err.line, err.column) == ("build.envd", 1, 1)
    assert "cannot fetch" in err.message and "\n" not in str(err)


def test_missing_ref_on_the_server(tmp_path: Path, git_server: str) -> None:
    ctx = write_build(tmp_path, f"""\
        lib = include(git="{git_server}", ref="no-such-tag")
        def build():
            lib.tensorboard()
        """)
    err = load_fails(ctx)
    assert err.line == 1 and "no ref `no-such-tag`" in err.message
