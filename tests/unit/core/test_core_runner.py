"""The runner contract itself: the ABC, its records, RunnerContract on the stub, the guide."""

from __future__ import annotations

import datetime as dt
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from envd_core.environment import (
    Endpoint,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    GPURequest,
    Mount,
    PortMapping,
    PublishedPort,
    Resources,
)
from envd_core.errors import RunnerError, ValidationError
from envd_core.plugins import Plugins
from envd_core.runner import EnvironmentNotFoundError, Runner, RunnerUnsupportedError
from envd_core.testing import RunnerContract, StubRunner, make_plugin

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "plugin-guide.md"


class TestStubRunnerContract(RunnerContract):
    """The stub passes the static contract; its lifecycle tests are skipped (no image)."""

    runner_cls = StubRunner


def test_a_runner_missing_required_methods_is_refused(
    plugins: Plugins, register_plugin: Any
) -> None:
    class Half(Runner):
        name = "half"

        def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
            raise NotImplementedError

    assert inspect.isabstract(Half)
    register_plugin(make_plugin(runners=[Half]), name="half-plugin")
    with pytest.raises(Exception, match="does not implement required method"):
        plugins.runner_type("half")


def test_unsupported_default_names_the_runner() -> None:
    with pytest.raises(RunnerUnsupportedError) as info:
        StubRunner(None).pause("x")
    assert str(info.value) == "runner `envd-testing-runner` cannot pause environments"
    assert isinstance(info.value, RunnerError)


def test_default_status_probes_by_listing() -> None:
    assert StubRunner(None).status().reachable is True

    class Broken(StubRunner):
        def list_environments(self) -> list[Environment]:
            raise RunnerError("cannot reach `nowhere`")

    status = Broken(None).status()
    assert (status.reachable, status.error) == (False, "cannot reach `nowhere`")


def test_require_running() -> None:
    env = Environment(name="e", image="i", status=EnvironmentStatus.EXITED, runner="r")
    with pytest.raises(RunnerError, match="`e` is exited, not running"):
        StubRunner(None).require_running(env)
    with pytest.raises(EnvironmentNotFoundError, match="`e`"):
        StubRunner(None).inspect("e")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EnvironmentSpec(name="a b", image="i"), "invalid environment name `a b`"),
        (lambda: EnvironmentSpec(name="a", image=" "), "environment `a` has no image"),
        (lambda: PortMapping(0), "invalid container port `0`"),
        (lambda: PortMapping(80, protocol="sctp"), "invalid protocol `sctp`"),  # type: ignore[arg-type]
        (lambda: Mount("/a", "b"), "both paths must be absolute"),
        (lambda: Resources(cpus=0), "invalid cpus `0`"),
        (lambda: Resources(cpu_set="0-"), "invalid cpu set `0-`"),
        (lambda: Resources(memory_bytes=-1), "invalid memory `-1`"),
        (lambda: GPURequest(count=0), "invalid GPU count `0`"),
        (lambda: GPURequest(count=2, device_ids=("0",)), "either a GPU count or GPU device ids"),
    ],
)
def test_records_refuse_bad_values_in_one_line(make: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_environment_json_and_lookup() -> None:
    created = dt.datetime(2026, 12, 1, 1, 2, 3, tzinfo=dt.timezone.utc)
    env = Environment(
        name="e", image="i:1", status=EnvironmentStatus.parse("Running"), runner="docker",
        id="c0ffee", created=created, ports=(PublishedPort(2222, 40022, service="ssh"),),
        labels={"k": "v"}, ssh=Endpoint("127.0.0.1", 40022),
    )
    assert env.running and env.port_for(2222) == PublishedPort(2222, 40022, service="ssh")
    assert env.port_for(2222, "udp") is None
    row = env.to_json()
    assert row["status"] == "running" and row["created"] == "2026-12-01T01:02:03+00:00"
    assert row["ssh"] == {"host": "127.0.0.1", "port": 40022}
    assert EnvironmentStatus.parse("removing") is EnvironmentStatus.UNKNOWN


def test_the_guide_describes_every_runner_member() -> None:
    """docs/plugin-guide.md §3 names every public member and flag of Runner (a drift check)."""
    text = GUIDE.read_text()
    section = text[text.index("## 3. Runner types"):text.index("## 4. Keep startup fast")]
    members = {name for name in vars(Runner) if not name.startswith("_")}
    members |= {name for name in Runner.__annotations__ if not name.startswith("_")}
    missing = sorted(m for m in members if not re.search(rf"`{re.escape(m)}[`(]", section))
    assert missing == [], f"plugin-guide §3 does not describe: {missing}"


def test_option_reads_the_converted_value_or_the_declared_default() -> None:
    from envd_core.options import Option
    from envd_core.testing import StubRunner

    class WithOptions(StubRunner):
        options = (Option("retries", "attempts", kind="int", default="3"),
                   Option("verbose", "say more", kind="bool"))

    runner = WithOptions(None, {"verbose": "true"})
    assert runner.option("retries") == 3
    assert runner.option("verbose") is True
    assert WithOptions(None).option("verbose") is None
    with pytest.raises(KeyError):
        runner.option("nope")
