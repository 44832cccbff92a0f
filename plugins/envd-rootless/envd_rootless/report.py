"""How the rootless builder reports its stages: one line per stage through a callable.

The same seam as the docker-container builder's: today ``envd: <line>`` on stderr; when the
core's builder contract takes a progress argument, the builder passes it here instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Receives one human-readable line per stage.
Reporter = Callable[[str], None]


def stderr_reporter(line: str) -> None:
    """Write ``envd: <line>`` to stderr (stdout stays clean for ``--format json``)."""
    sys.stderr.write(f"envd: {line}\n")
    sys.stderr.flush()


def quiet_reporter(line: str) -> None:
    """Discard progress."""
