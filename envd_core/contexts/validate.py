"""Context name rules.

A name is 1 to 63 characters from ``A-Z a-z 0-9 _ . -`` and starts with a letter or a digit.
That rules out empty names, slashes, whitespace, leading dots (hidden files, ``..``), control
characters and anything a shell or a file system would trip on, while accepting every name
upstream envd's documentation and tests use (``default``, ``remote-context``, ``demo``).
"""

from __future__ import annotations

import re

from envd_core.errors import ValidationError

MAX_NAME_LENGTH = 63
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid context name, else raise ValidationError."""
    if not name:
        raise ValidationError("context name must not be empty")
    shown = name if len(name) <= 80 else name[:77] + "..."
    shown = shown.encode("unicode_escape").decode("ascii")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"context name `{shown}` is too long ({len(name)} > {MAX_NAME_LENGTH} characters)"
        )
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid context name `{shown}`: use letters, digits, `_`, `.` and `-`, "
            "starting with a letter or digit"
        )
    return name
