"""The one error tree: typed kinds, exit codes, and the one-line rendering of messages."""

from __future__ import annotations

import json

import pytest

from envd_core.buildkit.errors import KINDS, BuildkitConnectionError, classify
from envd_core.envdfile.errors import BuildFileError, BuildOptionError
from envd_core.errors import (
    BuilderError,
    BuildError,
    ContextError,
    EnvdError,
    ErrorKind,
    PluginError,
    RunnerError,
    StoreError,
    UsageError,
    ValidationError,
    one_line,
)


@pytest.mark.parametrize(
    ("cls", "kind", "code"),
    [
        (EnvdError, ErrorKind.ERROR, 1), (UsageError, ErrorKind.USAGE, 2),
        (ValidationError, ErrorKind.INVALID, 2), (PluginError, ErrorKind.PLUGIN, 1),
        (ContextError, ErrorKind.ERROR, 1), (StoreError, ErrorKind.STORE, 1),
        (BuilderError, ErrorKind.UNAVAILABLE, 1), (BuildError, ErrorKind.BUILD, 1),
        (RunnerError, ErrorKind.RUNNER, 1), (BuildFileError, ErrorKind.BUILD, 1),
        (BuildOptionError, ErrorKind.INVALID, 2),
    ],
)
def test_every_error_has_a_kind_and_an_exit_code(cls, kind, code):
    error = cls("m")
    assert isinstance(error, EnvdError)
    assert error.kind is kind and error.exit_code == code


def test_an_instance_narrows_its_kind():
    error = ContextError("context `x` does not exist", kind=ErrorKind.NOT_FOUND)
    assert error.kind is ErrorKind.NOT_FOUND and ContextError("y").kind is ErrorKind.ERROR


def test_kinds_compare_and_serialise_as_strings():
    assert ErrorKind.NOT_BUILDKIT == "not-buildkit" and f"{ErrorKind.TLS}" == "tls"
    assert json.dumps({"k": ErrorKind.REFUSED}) == '{"k": "refused"}'
    assert ErrorKind.parse("dns") is ErrorKind.DNS
    assert ErrorKind.parse("something-new") is ErrorKind.ERROR and ErrorKind.parse(None) is None


def test_connection_errors_carry_a_classified_kind():
    error = BuildkitConnectionError("x", kind=classify(ConnectionRefusedError()))
    assert isinstance(error, BuilderError) and error.kind is ErrorKind.REFUSED
    assert classify(TimeoutError()) is ErrorKind.TIMEOUT and set(KINDS) <= set(ErrorKind)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, café 构建", "plain text, café 构建"),
        ("a\nb", "a\\nb"), ("a\r\nb", "a\\r\\nb"), ("a\u2028b\x85c", "a\\u2028b\\x85c"),
        ("tab\there", "tab\\there"), ("\x1b[31mred", "\\x1b[31mred"), ("nul\x00", "nul\\x00"),
    ],
)
def test_one_line_escapes_every_non_printable_character(raw, shown):
    assert one_line(raw) == shown
    assert len(one_line(raw).splitlines()) == 1


def test_cli_renders_messages_through_one_line(cli):
    done = cli("context", "create", "--name", "bad\nname\x1b[2J", "--builder", "x")
    assert done.exit_code == 2, done
    assert done.stderr_lines[0].startswith("envd: ") and "bad\\nname\\x1b[2J" in done.stderr
    assert "\x1b" not in done.stderr and len(done.stderr_lines) <= 2


def test_the_kind_enum_is_built_by_the_first_error_not_by_the_import():
    # the quick commands import the error classes on every run and raise one rarely
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from envd_core.errors import RunnerError, StoreError\n"
        "print('envd_core.error_kinds' in sys.modules)\n"
        "kind = StoreError('x').kind\n"
        "from envd_core.errors import ErrorKind\n"
        "print('envd_core.error_kinds' in sys.modules, kind is ErrorKind.STORE,\n"
        "      RunnerError('y').kind is ErrorKind.RUNNER)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out == "False\nTrue True True\n"
