"""How bootstrap tells the user what it does: one small seam.

Bootstrap stages (pull, create, start, fallback to a restricted container, ready) are reported
through a :data:`Reporter`, a callable taking one line. Today the default writes
``envd: <line>`` to stderr, like the core's warnings; when the core's builder contract grows a
progress argument, :meth:`DockerContainerBuilder.bootstrap` passes it here and nothing else
changes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Receives one human-readable line per stage or progress update.
Reporter = Callable[[str], None]


def stderr_reporter(line: str) -> None:
    """Write ``envd: <line>`` to stderr (stdout stays clean for ``--format json``)."""
    sys.stderr.write(f"envd: {line}\n")
    sys.stderr.flush()


def quiet_reporter(line: str) -> None:
    """Discard progress (status probes, tests that check only the outcome)."""


class Recorder:
    """A reporter that keeps the lines (tests, and ``--format json`` summaries)."""

    def __init__(self, forward: Reporter | None = None) -> None:
        self.lines: list[str] = []
        self._forward = forward

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self._forward is not None:
            self._forward(line)
