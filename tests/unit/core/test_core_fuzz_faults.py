"""Fuzzing the inputs issue 15 found crashes in (hypothesis; fixed seed in CI, ``--fuzz-long``
for thousands of examples): whatever a user types or a build file holds, envd answers with one
of its own errors, never a traceback, a crash or a hang."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envd_core.contexts.validate import validate_name
from envd_core.envdfile.buildflags import parse_output, parse_platforms
from envd_core.envdfile.errors import BuildFileError
from envd_core.envdfile.lang import evaluate
from envd_core.envdfile.lang.limits import EvalLimits, check_nesting
from envd_core.errors import EnvdError, ValidationError
from envd_core.options import Option

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)
#: Characters that build nesting, plus what separates and ends it.
NESTERS = st.sampled_from(["[", "(", "{", "+1", "-", "not ", ".a", "[0]", " if 1 else ",
                           ", ", "]", ")", "}", "\n", "'", '"', "#", "\\"])


@given(TEXT)
def test_context_names(name: str) -> None:
    try:
        assert validate_name(name) == name
    except ValidationError as exc:
        assert "\x1b" not in exc.message and "\n" not in exc.message
        return
    assert name.isascii() and name.isprintable() and "/" not in name


@given(TEXT, st.sampled_from(["str", "int", "bool", "choice"]))
def test_option_values(raw: str, kind: str) -> None:
    option = Option("opt", "fuzzed", kind=kind, choices=("a", "b") if kind == "choice" else ())
    try:
        value = option.parse(raw)
    except ValidationError:
        return
    if kind == "int":
        assert value.lstrip("-").isascii() and value.lstrip("-").isdigit()


@given(TEXT)
def test_outputs(text: str) -> None:
    with contextlib.suppress(ValidationError):
        parse_output(text, stdout_is_tty=False)


@given(st.lists(TEXT, max_size=4))
def test_platforms(values: list[str]) -> None:
    with contextlib.suppress(ValidationError):
        assert parse_platforms(values)


@given(st.lists(NESTERS, max_size=4000))
def test_nesting_scanner_is_total(parts: list[str]) -> None:
    source = "x = " + "".join(parts)
    try:
        depth = check_nesting(source, "build.envd", 500)
    except BuildFileError as exc:
        assert exc.line is not None and exc.column is not None
        return
    assert 0 <= depth <= 500


@pytest.fixture(scope="module")
def context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@given(st.lists(NESTERS, max_size=3000), st.integers(0, 6000))
def test_hostile_build_files_end_in_an_envd_error(context_dir: Path, parts: list[str],
                                                  depth: int) -> None:
    """Random token soup, and brackets nested up to 6,000 deep (2,400 crashed the process),
    in a function that is never called: an EnvdError or a graph, never a crash."""
    body = "".join(parts)
    (context_dir / "build.envd").write_text(
        f"def build():\n    pass\n\ndef never():\n    x = {'[' * depth}{']' * depth}\n"
        f"    y = {body}\n")
    with contextlib.suppress(EnvdError):
        evaluate(context_dir / "build.envd", context_dir=context_dir,
                 limits=EvalLimits(isolate=False, time=10))
