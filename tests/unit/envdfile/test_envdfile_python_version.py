"""An explicit install.python(version=...) becomes a build-time check; the default does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.errors import EnvdError


def _compiled(tmp_path: Path, call: str) -> bytes:
    (tmp_path / "build.envd").write_text(f'def build():\n    base(image="debian:bookworm")\n    {call}\n')
    graph = load_build(tmp_path)
    compiled = compile_graph(graph, options=CompileOptions(context_dir=tmp_path))
    return compiled.definition.SerializeToString()


def test_explicit_version_is_checked(tmp_path: Path) -> None:
    data = _compiled(tmp_path, 'install.python(version="3.9")')
    assert b"3.9|3.9.*" in data
    assert b"this image provides Python" in data


def test_default_version_is_not_checked(tmp_path: Path) -> None:
    assert b"this image provides Python" not in _compiled(tmp_path, "install.python()")


@pytest.mark.parametrize("version", ["3.x", "3.9; rm -rf /", "latest"])
def test_malformed_version_is_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(EnvdError, match="give a version such as"):
        _compiled(tmp_path, f'install.python(version="{version}")')
