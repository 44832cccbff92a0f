"""``install.vscode_extensions``: parsing, fetching from an Open VSX-compatible gallery, the LLB.

The gallery is a real HTTP server on 127.0.0.1 (vsx_gallery.py); the real build is in
tests/integration/envdfile/test_vscode_build.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vsx_gallery import gallery

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.vscode import LOCAL_NAME, Extension, fetch
from envd_core.errors import BuildError


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENVD_VSCODE_CACHE", str(tmp_path / "vsx-cache"))
    return tmp_path / "vsx-cache"


@pytest.mark.parametrize("spec, parsed", [
    ("ms-python.python", Extension("ms-python", "python")),
    ("ms-python.python-2024.1.0", Extension("ms-python", "python", "2024.1.0")),
    ("eamodio.git-lens", Extension("eamodio", "git-lens")),
])
def test_parse_like_upstream(spec: str, parsed: Extension) -> None:
    assert Extension.parse(spec) == parsed


def test_fetch_unpacks_once_and_reuses_the_cache(cache: Path) -> None:
    with gallery({("envdtest", "hello"): "1.2.3"}) as (url, seen):
        key = fetch(Extension("envdtest", "hello"), "linux/amd64", base_url=url)
        assert (cache / key / "extension" / "package.json").is_file()
        again = fetch(Extension("envdtest", "hello"), "linux/amd64", base_url=url)
        pinned = fetch(Extension("envdtest", "hello", "1.2.3"), "linux/amd64", base_url=url)
    assert key == again == "envdtest.hello@linux-x64" and pinned == "envdtest.hello-1.2.3@linux-x64"
    assert [s.split("?")[0] for s in seen] == [
        "/api/envdtest/hello/latest", "/files/envdtest.hello-1.2.3.vsix",
        "/api/envdtest/hello/1.2.3", "/files/envdtest.hello-1.2.3.vsix"]
    assert "targetPlatform=linux-x64" in seen[0]


def test_fetch_errors_are_one_line(cache: Path) -> None:
    with gallery({}) as (url, _), pytest.raises(
            BuildError, match=r"answered HTTP 404; check the extension's name"):
        fetch(Extension("nobody", "nothing"), "linux/amd64", base_url=url)
    with pytest.raises(BuildError, match=r"cannot download .*ENVD_VSCODE_GALLERY"):
        fetch(Extension("a", "b"), "linux/amd64", base_url=url)  # the server is gone
    assert not any(cache.glob("*@*"))


def test_dev_image_copies_each_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cache: Path) -> None:
    (tmp_path / "build.envd").write_text(
        'def build():\n    base(image="debian:bookworm", dev=True)\n'
        '    install.vscode_extensions(name=["envdtest.hello", "envdtest.other-0.1.0"])\n')
    with gallery({("envdtest", "hello"): "1.2.3", ("envdtest", "other"): "0.1.0"}) as (url, _):
        monkeypatch.setenv("ENVD_VSCODE_GALLERY", url)
        compiled = compile_graph(load_build(tmp_path),
                                 options=CompileOptions(context_dir=tmp_path))
    assert compiled.local_dirs[LOCAL_NAME] == str(cache)
    llb = compiled.dump_llb()
    assert b"/home/envd/.vscode-server/extensions/envdtest.hello" in llb
    assert b"/home/envd/.vscode-server/extensions/envdtest.other-0.1.0" in llb
    assert b"envdtest.other-0.1.0@linux-x64/extension" in llb


def test_non_dev_image_installs_nothing_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "build.envd").write_text(
        'def build():\n    base(image="debian:bookworm")\n'
        '    install.vscode_extensions(name=["envdtest.hello"])\n')
    compiled = compile_graph(load_build(tmp_path), options=CompileOptions(context_dir=tmp_path))
    assert LOCAL_NAME not in compiled.local_dirs
    assert any("dev images only" in w for w in compiled.warnings)
