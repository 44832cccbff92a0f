"""Progress lines of bootstrap and remove: the core's :data:`~envd_core.builder.Report`.

The CLI prints each line to stderr; :func:`~envd_core.builder.silent` (the default) drops them.
"""

from __future__ import annotations

import sys

from envd_core.builder import Report, silent

#: Kept as names of this module.
Reporter = Report
quiet_reporter = silent


def stderr_reporter(line: str) -> None:
    """Write ``envd: <line>`` to stderr (the ephemeral daemon's stop at exit uses it)."""
    sys.stderr.write(f"envd: {line}\n")
    sys.stderr.flush()
