"""Parse errors point at the offending line, even where starlark-rust reports 1:1."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd_core.envdfile import load_build
from envd_core.envdfile.errors import BuildFileError


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ('def build():\n    base(image="x"\n', 2, "never closed"),
        ('def build():\n    base(image="x")\n    run(commands=["a"]]\n', 3, "']'"),
    ],
)
def test_parse_error_position(tmp_path: Path, source: str, line: int, fragment: str) -> None:
    (tmp_path / "build.envd").write_text(source)
    with pytest.raises(BuildFileError) as info:
        load_build(tmp_path)
    assert info.value.line == line
    assert fragment in info.value.message
    assert info.value.message.startswith(f"build.envd:{line}:")
    assert "\n" not in info.value.message
