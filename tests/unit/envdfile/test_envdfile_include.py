"""``include(git=...)`` against real git repositories on disk (``file://``, no daemon).

The wire protocol over a real ``git daemon`` is in tests/integration/envdfile/test_include_git.py.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from envd_core.envdfile.errors import BuildFileError
from envd_core.envdfile.include import IncludeSpec, fetch, module_source, rewrite_includes
from envd_core.envdfile.lang import evaluate

LIB = """\
def tensorboard(host_port=6006):
    install.python_packages(name=["tensorboard"])
    runtime.expose(envd_port=6006, host_port=host_port, service="tensorboard")

_private = 1
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def lib_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "envdlib"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "lib.envd").write_text(LIB)
    (repo / "tools").mkdir()
    (repo / "tools" / "tools.envd").write_text(
        'load("pkgs.envd", "PKGS")\n\ndef tools():\n    install.apt_packages(name=PKGS)\n')
    (repo / "tools" / "pkgs.envd").write_text('PKGS = ["curl"]\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    return repo


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ENVD_INCLUDE_CACHE", str(root))
    return root


def build(tmp_path: Path, text: str) -> object:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "build.envd").write_text(textwrap.dedent(text))
    return evaluate(ctx / "build.envd", context_dir=ctx)


def fails(tmp_path: Path, text: str) -> BuildFileError:
    with pytest.raises(BuildFileError) as info:
        build(tmp_path, text)
    return info.value


def test_rewrite_keeps_lines_and_columns() -> None:
    src = 'x = 1\nlib = include(\n  git="u", ref="v1")\ny = lib.f\n'
    out, specs = rewrite_includes(src)
    assert out.split("\n")[1] == 'load("@envd-include:0", lib="envd_include_module")'
    assert out.count("\n") == src.count("\n")
    assert out.split("\n")[3] == "y = lib.f"
    assert specs == [IncludeSpec(url="u", ref="v1", line=2, column=1)]


def test_rewrite_leaves_other_forms_to_the_builtin() -> None:
    for src in ('def f():\n    lib = include("u")\n', 'lib = include(git=URL)\n',
                'lib = include("u", branch="x")\n'):
        assert rewrite_includes(src) == (src, [])


def test_module_of_public_globals_from_every_file(tmp_path: Path, lib_repo: Path) -> None:
    g = build(tmp_path, f"""
        lib = include(git="file://{lib_repo}")
        def build():
            lib.tensorboard(host_port=8888)
            lib.tools()
        """)
    assert g.python_packages == [["tensorboard"]]  # type: ignore[attr-defined]
    assert g.apt_packages == ["curl"]  # type: ignore[attr-defined]
    assert g.runtime.expose[0].host_port == 8888  # type: ignore[attr-defined]
    err = fails(tmp_path, f"""
        lib = include(git="file://{lib_repo}")
        def build():
            lib._private
        """)
    assert (err.file, err.line) == ("build.envd", 4)
    assert "_private" in err.message


def test_pinned_tag_and_commit_are_used_offline(tmp_path: Path, lib_repo: Path) -> None:
    first = git(lib_repo, "rev-parse", "HEAD")
    (lib_repo / "lib.envd").write_text(LIB.replace('"tensorboard"]', '"tensorboard==2.16"]'))
    git(lib_repo, "commit", "-qam", "v2")
    url = f"file://{lib_repo}"
    head = fetch(IncludeSpec(url=url))
    assert head.name == git(lib_repo, "rev-parse", "HEAD")
    assert "2.16" in (head / "lib.envd").read_text()
    tagged = fetch(IncludeSpec(url=url, ref="v1"))
    assert tagged.name == first and "2.16" not in (tagged / "lib.envd").read_text()
    # the remote is gone: a tag already fetched and a commit id still resolve from the cache
    moved = lib_repo.rename(tmp_path / "gone")
    assert fetch(IncludeSpec(url=url, ref="v1")) == tagged
    assert fetch(IncludeSpec(url=url, ref=first)) == tagged
    # a branch is fetched every time (upstream pulls); unreachable, the cached copy is used
    assert fetch(IncludeSpec(url=url)) == head
    assert moved.is_dir()


def test_missing_ref_is_one_line_at_the_call(tmp_path: Path, lib_repo: Path) -> None:
    err = fails(tmp_path, f"""
        # syntax=v1
        lib = include(git="file://{lib_repo}", ref="v9")
        def build():
            lib.tools()
        """)
    assert (err.file, err.line, err.column) == ("build.envd", 3, 1)
    assert "no ref `v9`" in err.message and "\n" not in str(err)


def test_unreachable_repository_is_one_line(tmp_path: Path) -> None:
    err = fails(tmp_path, f"""
        lib = include(git="file://{tmp_path}/nothing-here")
        def build():
            pass
        """)
    assert (err.file, err.line) == ("build.envd", 2)
    assert "cannot fetch" in err.message and "\n" not in str(err)


def test_error_inside_an_included_file_names_that_file(tmp_path: Path, lib_repo: Path) -> None:
    (lib_repo / "broken.envd").write_text("def broken():\n    install.apt_packages(name=[1])\n")
    git(lib_repo, "add", "-A")
    git(lib_repo, "commit", "-qm", "broken")
    err = fails(tmp_path, f"""
        lib = include(git="file://{lib_repo}")
        def build():
            lib.broken()
        """)
    assert err.file is not None and err.file.endswith("/broken.envd")
    assert (err.line, err.column) == (2, 5)
    assert "install.apt_packages" in err.message


def test_syntax_error_inside_an_included_file(tmp_path: Path, lib_repo: Path) -> None:
    (lib_repo / "lib.envd").write_text("def f(:\n    pass\n")
    git(lib_repo, "commit", "-qam", "syntax")
    err = fails(tmp_path, f"""
        lib = include(git="file://{lib_repo}")
        def build():
            pass
        """)
    assert err.file is not None and err.file.endswith("/lib.envd") and err.line == 1


def test_duplicate_names_across_files_are_refused(tmp_path: Path, lib_repo: Path) -> None:
    (lib_repo / "again.envd").write_text("def tools():\n    pass\n")
    git(lib_repo, "add", "-A")
    git(lib_repo, "commit", "-qm", "dup")
    with pytest.raises(Exception, match="`tools` is defined in both"):
        module_source(fetch(IncludeSpec(url=f"file://{lib_repo}")), "u")


def test_include_in_a_function_says_how_to_write_it(tmp_path: Path) -> None:
    err = fails(tmp_path, """
        def build():
            lib = include(git="https://example.com/lib")
        """)
    assert err.line == 3 and "top level" in err.message
