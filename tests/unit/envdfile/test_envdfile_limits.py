"""Bounded evaluation: nesting depth, memory, steps and time each end in one located error.

The reproducers of issue 15 (a segfault at ~2,400 nested brackets or ~3,300 chained ``+1``,
24 GB before the OOM killer, endless loops) run here against the real evaluator, forked with
rlimits as the CLI runs it and in-process.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from envd_core.envdfile.errors import BuildArgumentError, BuildFileError
from envd_core.envdfile.lang import evaluate
from envd_core.envdfile.lang.limits import (
    LIMITS_ENV,
    EvalLimits,
    check_nesting,
    limits_in_force,
    parse_size,
)
from envd_core.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def evaluate_text(tmp_path: Path, text: str, limits: EvalLimits) -> BuildFileError:
    (tmp_path / "build.envd").write_text(textwrap.dedent(text))
    with pytest.raises(BuildFileError) as info:
        evaluate(tmp_path / "build.envd", context_dir=tmp_path, limits=limits,
                 check_buildable=False)
    return info.value


@pytest.fixture(params=[True, False], ids=["forked", "in-process"])
def limits(request: pytest.FixtureRequest) -> EvalLimits:
    return EvalLimits(isolate=request.param)


# ---------------------------------------------------------------- nesting
@pytest.mark.parametrize("expr", [
    "[" * 2400 + "]" * 2400,
    "1" + "+1" * 3300,
    "not " * 3000 + "True",
    "-" * 3000 + "1",
    "f(" * 2400 + ")" * 2400,
    "a" + "[0]" * 3000,
    "a" + ".b" * 3000,
    "1 if True else " * 3000 + "1",
    "{'a': " * 2400 + "1" + "}" * 2400,
])
def test_deep_nesting_in_a_function_never_called_is_one_located_error(
    tmp_path: Path, limits: EvalLimits, expr: str
) -> None:
    error = evaluate_text(tmp_path, f"def build():\n    pass\n\ndef never():\n    x = {expr}\n",
                          limits)
    assert "nesting is deeper than the limit of 1000 levels" in error.message
    assert (error.file, error.line) == ("build.envd", 5)
    assert error.column is not None and error.column > 1000
    assert LIMITS_ENV in (error.hint or "")


def test_nesting_limit_is_raised_by_the_setting(tmp_path: Path) -> None:
    (tmp_path / "build.envd").write_text("def build():\n    x = " + "[" * 1500 + "]" * 1500
                                         + "\n")
    evaluate(tmp_path / "build.envd", context_dir=tmp_path,
             limits=EvalLimits(depth=3000), check_buildable=False)


def test_nesting_of_blocks_counts(tmp_path: Path) -> None:
    lines = ["def build():"] + [" " * (i + 1) + "if True:" for i in range(60)]
    lines.append(" " * 62 + "pass")
    with pytest.raises(BuildFileError) as info:
        check_nesting("\n".join(lines) + "\n", "build.envd", 50)
    assert info.value.line is not None and 50 <= info.value.line <= 52


@pytest.mark.parametrize("text", [
    "x = [" + ", ".join(str(i) for i in range(100_000)) + "]\n",
    "x = {" + ", ".join(f"'k{i}': {i}" for i in range(20_000)) + "}\n",
    "x = '" + "[" * 5000 + "'\n",
    "# " + "(" * 5000 + "\nx = 1\n",
    'x = """\n' + "{" * 5000 + '\n"""\n',
    "x = r'\\'" + "(" * 10 + "'\n",
])
def test_wide_but_flat_sources_and_brackets_in_strings_pass(text: str) -> None:
    assert check_nesting(text, "build.envd", 100) < 10


def test_real_build_files_nest_little() -> None:
    files = list(EXAMPLES.rglob("*.envd"))
    files += list((EXAMPLES.parent / "tests" / "integration" / "envdfile").rglob("*.envd"))
    assert files
    for file in files:
        assert check_nesting(file.read_text(), file.name, 1000) < 40, file


# ---------------------------------------------------------------- steps, time, memory
ENDLESS = """\
def build():
    n = 0
    for i in range(100000000):
        n += 1
"""


def test_steps_limit_stops_a_long_loop_at_its_statement(tmp_path: Path,
                                                        limits: EvalLimits) -> None:
    error = evaluate_text(tmp_path, ENDLESS, EvalLimits(steps=50, isolate=limits.isolate))
    assert "limit of 50 steps" in error.message
    assert error.file == "build.envd" and error.line in (3, 4)  # the loop or its body
    assert "steps=N" in (error.hint or "")


def test_time_limit_stops_an_endless_loop_at_its_statement(tmp_path: Path,
                                                           limits: EvalLimits) -> None:
    error = evaluate_text(tmp_path, ENDLESS,
                          EvalLimits(time=0.3, steps=10**9, isolate=limits.isolate))
    assert "longer than the limit of 0.3s" in error.message
    assert error.file == "build.envd" and error.line in (3, 4)


def test_memory_limit_stops_a_growing_list_at_its_statement(tmp_path: Path,
                                                            limits: EvalLimits) -> None:
    error = evaluate_text(tmp_path, """\
        def build():
            x = []
            for i in range(100000000):
                x.append("abcdefgh" * 16)
        """, EvalLimits(memory=parse_size("64MiB"), steps=10**9, isolate=limits.isolate))
    assert "memory limit of 64 MiB" in error.message
    assert error.file == "build.envd"


def test_one_huge_allocation_hits_the_rlimit_of_the_forked_child(tmp_path: Path) -> None:
    error = evaluate_text(tmp_path, "def build():\n    x = [0] * 2000000000\n",
                          EvalLimits(memory=parse_size("128MiB")))
    assert "memory limit of 128 MiB" in error.message
    assert error.file == "build.envd"


def test_errors_keep_their_class_across_the_fork(tmp_path: Path) -> None:
    (tmp_path / "build.envd").write_text('def build():\n    install.apt_packages(name=[""])\n')
    with pytest.raises(BuildFileError) as info:
        evaluate(tmp_path / "build.envd", context_dir=tmp_path, limits=EvalLimits())
    assert "empty package name" in info.value.message
    assert (info.value.line, info.value.column) == (2, 5)


def test_vendor_function_runs_in_the_child_and_the_graph_comes_back(tmp_path: Path) -> None:
    def tensorrt(graph: object, version: str = "") -> None:
        graph.apt_packages.append(f"tensorrt={version}")  # type: ignore[attr-defined]

    (tmp_path / "build.envd").write_text('def build():\n    install.tensorrt(version="8")\n')
    graph = evaluate(tmp_path / "build.envd", context_dir=tmp_path, limits=EvalLimits(),
                     extra_functions={"install.tensorrt": tensorrt})
    assert graph.apt_packages == ["tensorrt=8"]


def test_vendor_bug_is_named_not_crashed(tmp_path: Path) -> None:
    def broken(graph: object) -> None:
        raise KeyError("boom")

    (tmp_path / "build.envd").write_text("def build():\n    acme()\n")
    with pytest.raises(BuildFileError) as info:
        evaluate(tmp_path / "build.envd", context_dir=tmp_path, limits=EvalLimits(),
                 extra_functions={"acme": broken})
    assert "`acme` failed: KeyError" in info.value.message
    assert not isinstance(info.value, BuildArgumentError)


# ---------------------------------------------------------------- settings
def test_limits_from_the_environment_and_a_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMITS_ENV, "memory=2GiB, time=300")
    limits = limits_in_force({"depth": "2000", "memory": "512MiB"})
    assert (limits.depth, limits.memory, limits.time) == (2000, 2 * 1024**3, 300.0)
    assert limits.steps == EvalLimits().steps
    assert limits.stack_size() >= 2000 * 16 * 1024


@pytest.mark.parametrize("text", ["depth=0", "memory=lots", "steps", "speed=3", "time=-1",
                                  "isolate=maybe"])
def test_bad_limit_settings_are_one_validation_error(monkeypatch: pytest.MonkeyPatch,
                                                     text: str) -> None:
    monkeypatch.setenv(LIMITS_ENV, text)
    with pytest.raises(ValidationError) as info:
        limits_in_force()
    assert LIMITS_ENV in info.value.message


# ---------------------------------------------------------------- linear de-duplication
def test_many_apt_packages_are_deduplicated_in_order(tmp_path: Path) -> None:
    """Issue 15: `pkg not in list` made 40,000 packages take 18 s, 300,000 never finish."""
    (tmp_path / "build.envd").write_text(
        "def build():\n"
        "    install.apt_packages(name=['p%d' % (i % 100000) for i in range(150000)])\n"
        "    install.apt_packages(name=['p0', 'new'])\n"
        "    data.envd(name='a')\n    data.envd(name='a')\n"
    )
    graph = evaluate(tmp_path / "build.envd", context_dir=tmp_path,
                     limits=EvalLimits(isolate=False))
    assert len(graph.apt_packages) == 100001
    assert graph.apt_packages[:2] == ["p0", "p1"] and graph.apt_packages[-1] == "new"
    assert graph.extensions["data_sources"] == ["a"]
