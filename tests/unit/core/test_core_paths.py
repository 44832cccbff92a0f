"""One error path for user-given paths (issue 15 item 5): every bad path flag is one
ValidationError naming the flag, the path and the cause, checked before any build runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from envd_core.envdfile.buildflags import locate_build_file, parse_from, parse_output
from envd_core.envdfile.errors import BuildOptionError
from envd_core.errors import EnvdError, ValidationError
from envd_core.paths import (
    check_component_lengths,
    check_output_dir,
    is_dir,
    is_file,
    path_error,
    write_file,
)
from envd_core.pipeline.execute import check_destinations

LONG = "a" * 300


@pytest.mark.parametrize(("target", "needle"), [
    ("{tmp}", "is a directory"),
    ("{tmp}/missing/x.json", "does not exist"),
    ("/proc/version", "is a kernel file"),
    ("{tmp}/file.txt/x.json", "is not a directory"),
    (f"{{tmp}}/{LONG}.json", "305 bytes, longer than the file system allows"),
])
def test_dump_llb_targets_that_cannot_be_written(tmp_path: Path, target: str,
                                                 needle: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = target.format(tmp=tmp_path)
    with pytest.raises(ValidationError) as info:
        check_destinations(None, path)
    assert needle in info.value.message
    assert info.value.message.startswith("--dump-llb `")
    assert "\n" not in info.value.message and info.value.hint


def test_writable_targets_pass(tmp_path: Path) -> None:
    check_destinations(None, str(tmp_path / "llb.pb"))
    check_destinations(None, "-")
    check_destinations(None, os.devnull)
    deeper = tmp_path / "new" / "deeper"
    assert check_output_dir(deeper, "--output dest") == deeper
    check_destinations(parse_output(f"type=tar,dest={tmp_path / 'a.tar'}"), None)


@pytest.mark.parametrize(("output", "needle"), [
    ("type=tar,dest={tmp}/missing/a.tar", "does not exist"),
    ("type=local,dest={tmp}/file.txt", "is not a directory"),
    ("type=local,dest={tmp}/file.txt/sub", "is not a directory"),
])
def test_output_destinations_are_checked_before_the_solve(tmp_path: Path, output: str,
                                                          needle: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValidationError) as info:
        check_destinations(parse_output(output.format(tmp=tmp_path)), None)
    assert needle in info.value.message and "--output dest" in info.value.message


@pytest.mark.parametrize("value", ["maybe", "yes", "2", ""])
def test_push_must_be_a_boolean_before_the_solve(value: str) -> None:
    with pytest.raises(BuildOptionError) as info:
        parse_output(f"type=image,name=x,push={value}")
    assert "push=" in info.value.message and "boolean" in info.value.message


@pytest.mark.parametrize("value", ["true", "false", "1", "0", "True", "FALSE"])
def test_go_booleans_are_accepted(value: str) -> None:
    assert parse_output(f"type=image,name=x,push={value}") is not None


def test_from_and_path_components_longer_than_name_max(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        locate_build_file(tmp_path, parse_from(f"{LONG}.envd:build"))
    assert info.value.message.startswith("--from `") and "305 bytes" in info.value.message
    with pytest.raises(ValidationError):
        check_component_lengths(tmp_path / LONG / "x", "--path")
    assert not is_dir(tmp_path / LONG) and not is_file(tmp_path / LONG)


def test_write_failure_names_the_path_and_the_cause(tmp_path: Path) -> None:
    with pytest.raises(EnvdError) as info:
        write_file(tmp_path, b"x", "--dump-llb")
    assert f"`{tmp_path}`" in info.value.message and "directory" in info.value.message.lower()
    error = path_error(OSError(errno.EROFS, "Read-only file system"), "write", "/x/y")
    assert error.message == "cannot write `/x/y`: Read-only file system"
    assert error.hint and "read-only" in error.hint


# ---------------------------------------------------------------- option validation (item 8)
@pytest.mark.parametrize(("raw", "needle"), [
    ("{tmp}", "is not a regular file"),
    ("/dev/null", "is not a regular file"),
    ("{tmp}/missing.pem", "does not exist"),
])
def test_path_options_must_name_a_regular_file(tmp_path: Path, raw: str, needle: str) -> None:
    from envd_core.options import Option

    with pytest.raises(ValidationError) as info:
        Option("ca-bundle", "CA", kind="path").parse(raw.format(tmp=tmp_path))
    assert needle in info.value.message and "`ca-bundle`" in info.value.message


def test_text_options_need_a_value_and_ints_ascii_digits() -> None:
    from envd_core.options import Option

    with pytest.raises(ValidationError):
        Option("servername", "TLS name").parse("")
    with pytest.raises(ValidationError):
        Option("retries", "n", kind="int").parse("\u0661\u0662")
    assert Option("retries", "n", kind="int").parse("12") == "12"
    assert Option("insecure", "x", kind="bool").parse("") == "true"


@pytest.mark.parametrize("requirements", ["/etc/passwd", "../secrets.txt", "a/../../b.txt"])
def test_requirements_outside_the_build_context_fail_evaluation(tmp_path: Path,
                                                                requirements: str) -> None:
    from envd_core.envdfile.errors import BuildFileError
    from envd_core.envdfile.lang import evaluate
    from envd_core.envdfile.lang.limits import EvalLimits

    (tmp_path / "build.envd").write_text(
        f'def build():\n    install.python_packages(requirements="{requirements}")\n')
    with pytest.raises(BuildFileError) as info:
        evaluate(tmp_path / "build.envd", context_dir=tmp_path, limits=EvalLimits(isolate=False))
    assert "outside the build context" in info.value.message
    assert (info.value.line, info.value.column) == (2, 5)
