"""``include(git=...)`` over the git wire protocol: a real ``git daemon`` on 127.0.0.1.

The fixture starts ``git daemon`` on a free port of its own (git_server.py; git ships it,
scripts/setup installs git) and stops it by its pid. Upstream's ``examples/include_pkg``
shape: a module of functions.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_server import free_port, make_repo
from git_server import git_daemon as serve

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.errors import BuildFileError

pytestmark = pytest.mark.integration


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A served bare repository ``envdlib.git`` with tag v1: its ``git://`` URL, the daemon."""
    served = make_repo(tmp_path, "envdlib", {"tensorboard.envd": textwrap.dedent("""\
        def tensorboard(host_port=6006):
            install.python_packages(name=["tensorboard"])
            runtime.expose(envd_port=6006, host_port=host_port, service="tensorboard")
        """)})
    with serve(served) as (base, proc):
        yield f"{base}/envdlib.git", proc


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
