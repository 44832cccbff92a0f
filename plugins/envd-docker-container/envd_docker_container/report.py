"""Progress lines of bootstrap and remove: the core's :data:`~envd_core.builder.Report`.

The core's builder contract passes a ``report`` callable (the CLI prints each line to stderr;
the default :func:`~envd_core.builder.silent` drops them). :class:`Recorder` keeps the lines,
for tests and for callers that want to show them later.
"""

from __future__ import annotations

import sys

from envd_core.builder import Report, silent

#: Kept as names of this module for the bench and the tests.
Reporter = Report
quiet_reporter = silent


def stderr_reporter(line: str) -> None:
    """Write ``envd: <line>`` to stderr (for scripts that call the builder directly)."""
    sys.stderr.write(f"envd: {line}\n")
    sys.stderr.flush()


class Recorder:
    """A report that keeps the lines (tests, and ``--format json`` summaries)."""

    def __init__(self, forward: Report | None = None) -> None:
        self.lines: list[str] = []
        self._forward = forward

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self._forward is not None:
            self._forward(line)
