"""Context name rules.

A name is 1 to 63 characters from ``A-Z a-z 0-9 _ . -`` and starts with a letter or a digit.
That rules out empty names, slashes, whitespace, leading dots (hidden files, ``..``), control
characters and anything a shell or a file system would trip on, while accepting every name
upstream envd's documentation and tests use (``default``, ``remote-context``, ``demo``).
"""

from __future__ import annotations

from envd_core.errors import ValidationError

MAX_NAME_LENGTH = 63
# a set, not a regular expression: every name in the store is checked on each `context ls`
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("_.-")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid context name, else raise ValidationError."""
    if not name:
        raise ValidationError("context name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"context name `{_shown(name)}` is too long ({len(name)} > {MAX_NAME_LENGTH} "
            "characters)"
        )
    if name[0] not in _FIRST or not _REST.issuperset(name):
        raise ValidationError(
            f"invalid context name `{_shown(name)}`: use letters, digits, `_`, `.` and `-`, "
            "starting with a letter or digit"
        )
    return name


def _shown(name: str) -> str:
    """``name`` as an error message quotes it: shortened, control characters escaped."""
    shown = name if len(name) <= 80 else name[:77] + "..."
    return shown.encode("unicode_escape").decode("ascii")
