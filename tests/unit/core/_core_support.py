"""Helpers shared by the core tests (imported as a plain module next to them)."""

from __future__ import annotations

from envd_core.testing import CliResult


def assert_one_error(result: CliResult, code: int = 1) -> str:
    """The result failed with ``code`` and stderr is one ``envd:`` line (+ optional hint)."""
    assert result.exit_code == code, result
    lines = result.stderr_lines
    assert 1 <= len(lines) <= 2, result
    assert lines[0].startswith("envd: "), result
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), result
    assert "Traceback" not in result.stderr
    return result.stderr
