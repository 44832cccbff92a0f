"""Path patterns with ``.dockerignore`` semantics.

The daemon sends include/exclude patterns for every FileSync call and expects the client to
apply them exactly as Docker does, so this follows moby's pattern matcher: ``*`` and ``?`` stop
at ``/``, ``**`` spans any number of directories (including none), ``[...]`` is a character
class, ``\\`` escapes, a leading ``!`` re-includes, later patterns win, and a pattern that
matches a directory also matches everything below it.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from envd_core.errors import ValidationError

# Characters that are regex syntax but plain text in a path pattern.
_REGEX_LITERALS = frozenset(".+()|{}$")


class PatternError(ValidationError):
    """A path pattern cannot be compiled."""


def clean_pattern(pattern: str) -> str:
    """Normalise one pattern the way Docker does (``filepath.Clean``, no leading ``/``)."""
    if not pattern:
        return pattern
    cleaned = posixpath.normpath(pattern)
    # normpath keeps a leading "//"; Go's Clean collapses it.
    while cleaned.startswith("//"):
        cleaned = cleaned[1:]
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def _translate(pattern: str) -> str:
    """Turn a cleaned pattern into an anchored regular expression."""
    out: list[str] = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                # "**/" is the same as "**": the separator is optional.
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _REGEX_LITERALS:
            out.append("\\" + ch)
        elif ch == "\\":
            if i + 1 < n:
                out.append(re.escape(pattern[i + 1]))
                i += 1
            else:
                out.append("\\\\")
        else:
            # "[", "]", "^" and "-" keep their character-class meaning; everything else is
            # matched literally (re.escape leaves ordinary characters alone).
            out.append(ch if ch in "[]^-" else re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern: ``text`` is the cleaned pattern without its ``!``."""

    text: str
    exclusion: bool
    regex: re.Pattern[str] = field(repr=False, compare=False)
    segments: tuple[re.Pattern[str] | None, ...] = field(repr=False, compare=False)

    @classmethod
    def compile(cls, raw: str) -> Pattern:
        """Compile ``raw`` (may start with ``!``); raise `PatternError` when it is invalid."""
        text = raw.strip()
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:].strip()
            if not text:
                raise PatternError(
                    f"illegal exclusion pattern `{raw}`: `!` must be followed by a path pattern"
                )
        text = clean_pattern(text)
        try:
            with warnings.catch_warnings():
                # Python warns about set syntax it may change later ("[[", "--"); Go has none.
                warnings.simplefilter("ignore")
                regex = re.compile(_translate(text), re.DOTALL)
                segments = tuple(
                    None if "**" in part else re.compile(_translate(part), re.DOTALL)
                    for part in text.split("/")
                )
        except (re.error, RecursionError, OverflowError) as exc:
            raise PatternError(
                f"invalid path pattern `{raw}`: {exc}; fix or remove it (check `[` `]` pairs)"
            ) from None
        return cls(text=text, exclusion=exclusion, regex=regex, segments=segments)

    def match(self, path: str) -> bool:
        """Whether ``path`` itself (not its parents) matches."""
        return self.regex.match(path) is not None

    def could_match_below(self, dir_path: str) -> bool:
        """Whether some path under ``dir_path`` might match (used to prune directory walks)."""
        parts = dir_path.split("/") if dir_path else []
        for i, part in enumerate(parts):
            if i >= len(self.segments):
                # The pattern is shorter than the directory: only a full match of a parent counts,
                # and callers check that separately.
                return False
            seg = self.segments[i]
            if seg is None:
                return True
            if seg.match(part) is None:
                return False
        return True


class PatternMatcher:
    """An ordered list of patterns, evaluated like Docker's ``MatchesOrParentMatches``."""

    def __init__(self, patterns: Iterable[str]) -> None:
        compiled = []
        for raw in patterns:
            if not raw.strip():
                continue
            compiled.append(Pattern.compile(raw))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, ``/``-separated) or one of its parents is matched.

        Patterns are applied in order: a plain pattern can only turn a non-match into a match
        and a ``!`` pattern can only turn a match back into a non-match, so the last relevant
        pattern wins.
        """
        path = clean_pattern(path)
        parent = posixpath.dirname(path)
        parents: list[str] = []
        if parent:
            parts = parent.split("/")
            parents = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path) or any(pattern.match(p) for p in parents)
            if hit:
                matched = not pattern.exclusion
        return matched


def parse_ignore_file(text: str) -> list[str]:
    """Parse ``.dockerignore`` content into patterns (comments, blanks, ``!``, leading ``/``)."""
    patterns: list[str] = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = clean_pattern(line)
        patterns.append(("!" + line) if invert else line)
    return patterns

