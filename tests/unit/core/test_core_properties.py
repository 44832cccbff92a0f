"""Property tests: whatever the user types, envd answers with exit 0, 1 or 2 and one error line.

Every example runs the real CLI in-process through ``run()`` (the console script's path), with a
throwaway ``tcp``-like builder that declares typed options.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envd_core.builder import Builder
from envd_core.options import Option
from envd_core.testing import CliResult, EnvdCli, StubRunner, make_plugin

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class OptionsBuilder(Builder):
    name = "tcp"
    options = (
        Option("tlscacert", "CA certificate", kind="path"),
        Option("insecure", "skip verification", kind="bool"),
        Option("retries", "attempts", kind="int"),
        Option("mode", "how", kind="choice", choices=("fast", "slow")),
        Option("label", "free text"),
    )

    def connect(self, *, timeout: float) -> Any:
        from envd_core.errors import BuilderError

        raise BuilderError("test builder cannot connect")


@pytest.fixture
def pcli(cli: EnvdCli, register_plugin: Any) -> EnvdCli:
    register_plugin(make_plugin(builders=[OptionsBuilder], runners=[StubRunner]), name="props")
    return cli


def check_shape(result: CliResult) -> None:
    """Exit 0, 1 or 2; a failure is one ``envd:`` line, optionally followed by one hint line."""
    assert result.exit_code in (0, 1, 2), result
    # the exact markers: a generated name such as "Traceback" may be echoed in a clean error
    assert "Traceback (most recent call last)" not in result.stderr, result
    assert "envd: internal error" not in result.stderr, result
    if result.exit_code != 0:
        lines = result.stderr_lines
        assert 1 <= len(lines) <= 2, result
        assert lines[0].startswith("envd: "), result
        assert len(lines) == 1 or lines[1].startswith("hint: "), result


def create(pcli: EnvdCli, name: str = "p", address: str = "h:1", *extra: str) -> CliResult:
    return pcli("context", "create", "--name", name, "--builder", "tcp",
                "--builder-address", address, "--runner", StubRunner.name, *extra)


@SETTINGS
@given(name=st.text(max_size=80))
def test_any_name(pcli, name):
    result = create(pcli, name)
    check_shape(result)
    if result.exit_code == 0:
        assert VALID_NAME.fullmatch(name)
        assert result.stderr == f"Context {name} is created\n"
        assert pcli("context", "rm", "--name", name).exit_code == 0
    elif VALID_NAME.fullmatch(name) and name != "default":
        pytest.fail(f"valid name refused: {result}")


@SETTINGS
@given(address=st.text(max_size=60) | st.builds(lambda s: "tcp://" + s, st.text(max_size=30)))
def test_any_address(pcli, address):
    result = create(pcli, "addr", address)
    check_shape(result)
    if result.exit_code == 0:
        shown = pcli("context", "ls").stdout
        assert "tcp://tcp://" not in shown
        assert pcli("context", "rm", "addr").exit_code == 0


OPTION_KEYS = st.sampled_from(["tlscacert", "insecure", "retries", "mode", "label", "nope", ""])


@SETTINGS
@given(
    pairs=st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", OPTION_KEYS, st.text(max_size=20)),
            st.text(max_size=30),
        ),
        max_size=4,
    ),
    flag=st.sampled_from(["--builder-opt", "--runner-opt"]),
)
def test_any_option_strings(pcli, pairs, flag):
    extra: list[str] = []
    for pair in pairs:
        extra += [flag, pair]
    result = create(pcli, "opts", "h:1", *extra)
    check_shape(result)
    if result.exit_code == 0:
        assert pcli("context", "rm", "opts").exit_code == 0


WORDS = st.sampled_from([
    "context", "plugins", "ls", "create", "use", "rm", "show", "inspect", "update", "export",
    "import", "--name", "--builder", "tcp", "--builder-address", "--format", "json", "table",
    "-f", "--no-status", "--use", "--context", "default", "p", "-", "--description",
    "--unset-opt", "--runner", StubRunner.name, "--builder-opt", "--debug-not", "=",
])


@SETTINGS
@given(argv=st.lists(WORDS | st.text(max_size=12), max_size=8))
def test_any_command_line(pcli, argv):
    if "--help" in argv or "-h" in argv:
        return
    check_shape(pcli(*argv))
