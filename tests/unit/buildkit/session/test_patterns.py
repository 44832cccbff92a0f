"""Pattern matcher: Docker's .dockerignore semantics, table-driven plus a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envd_core.buildkit.session.patterns import (
    PatternError,
    PatternMatcher,
    clean_pattern,
    parse_ignore_file,
)

CASES = [
    # (patterns, path, excluded?)
    (["*.pyc"], "a.pyc", True),
    (["*.pyc"], "dir/a.pyc", False),  # "*" does not cross "/"
    (["**/*.pyc"], "dir/sub/a.pyc", True),
    (["**/*.pyc"], "a.pyc", True),  # "**/" also matches zero directories
    (["build"], "build/out/x.o", True),  # a directory pattern covers its contents
    (["build"], "buildx", False),
    (["/build"], "build/x", True),  # leading slash is relative to the root
    (["docs/**"], "docs/a/b.md", True),
    (["docs/**"], "docs", False),  # only what is below docs/
    (["a/**/z"], "a/z", True),
    (["a/**/z"], "a/b/c/z", True),
    (["a/**/z"], "a/b/c/y", False),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    (["[ab].txt"], "b.txt", True),
    (["[ab].txt"], "c.txt", False),
    (["[^a].txt"], "a.txt", False),
    (["[^a].txt"], "c.txt", True),
    (["file.txt"], "fileXtxt", False),  # "." is literal
    (["a+b(c)"], "a+b(c)", True),
    (["\\*x"], "*x", True),
    (["\\*x"], "ax", False),
    (["*", "!keep.txt"], "keep.txt", False),
    (["*", "!keep.txt"], "drop.txt", True),
    (["*", "!keep.txt", "keep.txt"], "keep.txt", True),  # later patterns win
    (["logs", "!logs/important"], "logs/important/x", False),
    (["logs", "!logs/important"], "logs/other", True),
    (["./a/../b"], "b", True),  # patterns are cleaned
    (["a/"], "a/x", True),
    ([], "anything", False),
    (["", "  "], "anything", False),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), CASES)
def test_matcher_table(patterns: list[str], path: str, expected: bool) -> None:
    assert PatternMatcher(patterns).matches(path) is expected


def test_has_exclusions_flag() -> None:
    assert PatternMatcher(["a", "!b"]).has_exclusions
    assert not PatternMatcher(["a"]).has_exclusions


@pytest.mark.parametrize("bad", ["!", "  !  ", "[", "a[b", "[z-a]"])
def test_invalid_patterns_raise_a_clear_error(bad: str) -> None:
    with pytest.raises(PatternError) as info:
        PatternMatcher([bad])
    assert "`" in str(info.value)


def test_parse_ignore_file() -> None:
    text = "\ufeff# comment\n\n  node_modules  \n!/keep\n/abs/path/\n  # not a comment\n!  spaced\n"
    assert parse_ignore_file(text) == [
        "node_modules",
        "!keep",
        "abs/path",
        "# not a comment",
        "!spaced",
    ]


def test_clean_pattern() -> None:
    assert clean_pattern("a//b/./c/") == "a/b/c"
    assert clean_pattern("/") == "/"
    assert clean_pattern("//x") == "x"


segment = st.text(alphabet="ab*?[]!^\\-./ ", max_size=8)


@settings(max_examples=400, deadline=None)
@given(patterns=st.lists(st.text(max_size=12), max_size=4), path=st.text(max_size=20))
def test_any_pattern_and_path_never_crash(patterns: list[str], path: str) -> None:
    try:
        matcher = PatternMatcher(patterns)
    except PatternError:
        return
    assert isinstance(matcher.matches(path), bool)


@settings(max_examples=400, deadline=None)
@given(patterns=st.lists(segment, max_size=4), path=st.lists(segment, min_size=1, max_size=4))
def test_glob_heavy_patterns_never_crash(patterns: list[str], path: list[str]) -> None:
    try:
        matcher = PatternMatcher(patterns)
    except PatternError:
        return
    full = "/".join(path)
    assert isinstance(matcher.matches(full), bool)
    for pattern in matcher.patterns:
        assert isinstance(pattern.could_match_below(full), bool)


@given(name=st.text(alphabet="abcxyz._-", min_size=1, max_size=10))
def test_literal_pattern_matches_itself_and_children(name: str) -> None:
    cleaned = clean_pattern(name)
    if cleaned in (".", ".."):
        return
    matcher = PatternMatcher([cleaned])
    assert matcher.matches(cleaned)
    assert matcher.matches(cleaned + "/child")
