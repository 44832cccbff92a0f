"""``RunnerContract``: the tests every runner type passes (re-exported by :mod:`envd_core.testing`).

Subclass it as ``Test…`` and set ``runner_cls``. The static checks (name, options, address
forms, registration, capability flags that agree with the methods) always run. The lifecycle
checks create real environments, so they run only when the subclass names an image the runner
can start (``lifecycle_image``); otherwise each is skipped with the reason::

    class TestDockerRunner(RunnerContract):
        runner_cls = DockerRunner
        valid_address = "unix:///var/run/docker.sock"
        lifecycle_image = "127.0.0.1:5000/busybox:latest"   # has sh, sleep, cat, id

The image needs a POSIX ``sh`` with ``sleep``, ``cat``, ``pwd`` and ``id``. Every environment a
test creates is named ``envd-contract-<random>`` and removed afterwards, also on failure.
Override :meth:`RunnerContract.make_runner` when the runner needs options or credentials.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from envd_core.environment import (
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    Mount,
    PortMapping,
    RunnerStatus,
)
from envd_core.errors import RunnerError
from envd_core.runner import (
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    Runner,
    RunnerUnsupportedError,
)

if TYPE_CHECKING:
    from envd_core.plugins import Plugins
    from envd_core.testing import EnvdCli

__all__ = ["RunnerContract"]

# capability flag -> the optional methods it promises
_FLAG_METHODS: dict[str, tuple[str, ...]] = {
    "can_load_images": ("load_image",),
    "can_push_images": ("push_image",),
    "can_manage_images": ("images", "remove_image"),
    "can_start": ("start",),
    "can_pause": ("pause", "resume"),
    "can_show_logs": ("logs",),
    "can_list_processes": ("top",),
    "can_login": ("login", "logout"),
}
_LABEL = "ai.tensorchord.envd.contract"


class RunnerContract:
    """Contract every runner type satisfies. Subclass as ``Test…`` and set ``runner_cls``."""

    runner_cls: ClassVar[type[Runner]]
    #: An address the runner accepts, or ``None`` if it only works with its default.
    valid_address: ClassVar[str | None] = None
    #: An image the runner can start (with sh, sleep, cat, id); ``None`` skips lifecycle tests.
    lifecycle_image: ClassVar[str | None] = None
    #: Seconds to wait for an environment to reach a state the test expects.
    lifecycle_timeout: ClassVar[float] = 30.0

    def make_runner(self) -> Runner:
        """The runner the lifecycle tests use (override to pass options or credentials)."""
        address = self.runner_cls.normalize_address(self.valid_address or "")
        return self.runner_cls(address)

    # -- static checks ------------------------------------------------------------------------
    def test_name_is_a_plain_word(self) -> None:
        from envd_core.testing import _check_type_name

        _check_type_name(self.runner_cls, Runner)

    def test_is_concrete(self) -> None:
        import inspect

        assert not inspect.isabstract(self.runner_cls), self.runner_cls.__abstractmethods__

    def test_options_declared_properly(self) -> None:
        from envd_core.testing import _check_options

        _check_options(self.runner_cls.options_declared(), f"runner `{self.runner_cls.name}`")

    def test_capability_flags_match_methods(self) -> None:
        """A flag is true exactly when its methods are overridden: never probed with getattr."""
        cls = self.runner_cls
        for flag, methods in _FLAG_METHODS.items():
            declared = getattr(cls, flag)
            assert isinstance(declared, bool), f"`{flag}` must be a bool"
            for method in methods:
                overridden = getattr(cls, method) is not getattr(Runner, method)
                assert declared == overridden, (
                    f"`{cls.__name__}.{flag}` is {declared} but `{method}` is "
                    f"{'' if overridden else 'not '}overridden"
                )

    def test_unsupported_abilities_fail_with_one_line(self) -> None:
        """What a runner does not offer fails with one line naming it (the base's defaults).

        For an ability the runner does offer, the base default is called on it instead, so the
        check still proves the message would name this runner.
        """
        runner = self.runner_cls(self.runner_cls.normalize_address(self.valid_address or ""))
        calls: dict[str, tuple[str, tuple[object, ...]]] = {
            "can_start": ("start", ("x",)),
            "can_pause": ("pause", ("x",)),
            "can_show_logs": ("logs", ("x",)),
            "can_list_processes": ("top", ("x",)),
            "can_load_images": ("load_image", (io.BytesIO(b""),)),
            "can_push_images": ("push_image", ("x",)),
            "can_manage_images": ("images", ()),
            "can_login": ("logout", ("x",)),
        }
        for flag, (method, args) in calls.items():
            owner: Any = Runner if getattr(self.runner_cls, flag) else self.runner_cls
            with pytest.raises(RunnerUnsupportedError) as info:
                result = getattr(owner, method)(runner, *args)
                if method == "logs":
                    list(result)  # a generator raises only when iterated
            message = str(info.value)
            assert "\n" not in message and f"`{self.runner_cls.name}`" in message, message

    def test_empty_address_means_default(self) -> None:
        assert self.runner_cls.normalize_address("") is None
        assert self.runner_cls.normalize_address("   ") is None

    def test_normalize_address_is_idempotent(self) -> None:
        if self.valid_address is None:
            pytest.skip("runner takes no address")
        once = self.runner_cls.normalize_address(self.valid_address)
        assert once is not None
        assert self.runner_cls.normalize_address(once) == once
        twice_schemed = f"{self.runner_cls.name}://{self.runner_cls.name}://"
        assert not once.startswith(twice_schemed)

    def test_registers_through_the_hook(
        self, plugins: Plugins, register_plugin: Callable[..., str]
    ) -> None:
        from envd_core.testing import make_plugin

        name = register_plugin(make_plugin(runners=[self.runner_cls]))
        assert plugins.runner_type(self.runner_cls.name) is self.runner_cls
        assert plugins.provider_of("runners", self.runner_cls.name) == name

    def test_context_create(self, cli: EnvdCli, register_plugin: Callable[..., str]) -> None:
        from envd_core.testing import StubBuilder, make_plugin

        register_plugin(make_plugin(builders=[StubBuilder], runners=[self.runner_cls]))
        args = ["context", "create", "--name", "contract", "--builder", StubBuilder.name,
                "--builder-address", "x", "--runner", self.runner_cls.name]
        if self.valid_address is not None:
            args += ["--runner-address", self.valid_address]
        result = cli(*args)
        assert result.exit_code == 0, result

    # -- lifecycle ----------------------------------------------------------------------------
    @pytest.fixture
    def lifecycle(self) -> Iterator[_Lifecycle]:
        """A runner and a spec factory; every environment made through it is removed after."""
        if self.lifecycle_image is None:
            pytest.skip(f"{type(self).__name__}.lifecycle_image is not set: no real environment")
        helper = _Lifecycle(self.make_runner(), self.lifecycle_image, self.lifecycle_timeout)
        try:
            yield helper
        finally:
            helper.cleanup()

    def test_status_of_a_reachable_runner(self, lifecycle: _Lifecycle) -> None:
        status = lifecycle.runner.status()
        assert isinstance(status, RunnerStatus)
        assert status.reachable, status.error

    def test_create_inspect_list(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec(labels={_LABEL: "create"}, env={"ENVD_CONTRACT": "yes"})
        created = lifecycle.create(spec)
        assert isinstance(created, Environment)
        assert created.name == spec.name and created.status is EnvironmentStatus.RUNNING
        assert created.runner == self.runner_cls.name and created.id
        assert created.labels.get(_LABEL) == "create"
        again = lifecycle.runner.inspect(spec.name)
        assert (again.name, again.id, again.image) == (created.name, created.id, created.image)
        listed = {env.name: env for env in lifecycle.runner.list_environments()}
        assert spec.name in listed and listed[spec.name].id == created.id
        assert lifecycle.output(spec.name, ["sh", "-c", "echo $ENVD_CONTRACT"]) == (0, b"yes\n")

    def test_missing_environment_is_not_found(self, lifecycle: _Lifecycle) -> None:
        missing = f"envd-contract-missing-{uuid.uuid4().hex[:8]}"
        for call in (
            lambda: lifecycle.runner.inspect(missing),
            lambda: lifecycle.runner.stop(missing),
            lambda: lifecycle.runner.remove(missing, force=True),
            lambda: lifecycle.runner.exec(missing, ["true"], stdout=io.BytesIO()),
        ):
            with pytest.raises(EnvironmentNotFoundError) as info:
                call()
            assert f"`{missing}`" in str(info.value) and "\n" not in str(info.value)

    def test_create_twice_needs_replace(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        first = lifecycle.create(spec)
        with pytest.raises(EnvironmentExistsError, match=f"`{spec.name}`"):
            lifecycle.runner.create(spec)
        second = lifecycle.create(spec, replace=True)
        assert second.id != first.id and second.status is EnvironmentStatus.RUNNING

    def test_exec_streams_and_exit_code(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        out, err = io.BytesIO(), io.BytesIO()
        code = lifecycle.runner.exec(
            spec.name, ["sh", "-c", "echo out; echo err >&2; exit 3"], stdout=out, stderr=err
        )
        assert (code, out.getvalue(), err.getvalue()) == (3, b"out\n", b"err\n")

    def test_exec_env_workdir_user_stdin(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        code, out = lifecycle.output(
            spec.name, ["sh", "-c", 'echo "$GREETING"; pwd; id -u'],
            env={"GREETING": "hello there"}, workdir="/tmp", user="65534",
        )
        assert (code, out) == (0, b"hello there\n/tmp\n65534\n")
        payload = b"line\n" * 50_000  # larger than a pipe buffer: really streamed both ways
        code, out = lifecycle.output(spec.name, ["cat"], stdin=io.BytesIO(payload))
        assert code == 0 and out == payload

    def test_exec_with_tty(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        if not self.runner_cls.supports_tty:  # refused in one line, never a silent non-tty run
            with pytest.raises(RunnerError):
                lifecycle.runner.exec(spec.name, ["true"], tty=True, stdout=io.BytesIO())
            return
        code, out = lifecycle.output(spec.name, ["sh", "-c", "test -t 1 && echo tty"], tty=True)
        assert code == 0 and out.strip() == b"tty"

    def test_ports_are_published_on_free_host_ports(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec(ports=(PortMapping(8080, service="web"),))
        created = lifecycle.create(spec)
        port = created.port_for(8080)
        assert port is not None and port.host_port > 0, created.ports
        assert port.host_ip == "127.0.0.1"
        assert lifecycle.runner.inspect(spec.name).port_for(8080) == port

    def test_mounts(self, lifecycle: _Lifecycle, tmp_path: Path) -> None:
        if not self.runner_cls.supports_mounts:
            with pytest.raises(RunnerError):
                lifecycle.create(lifecycle.spec(mounts=(Mount(str(tmp_path), "/mnt/x"),)))
            return
        (tmp_path / "hello.txt").write_text("from the host\n")
        spec = lifecycle.spec(mounts=(Mount(str(tmp_path), "/mnt/ro", read_only=True),))
        lifecycle.create(spec)
        assert lifecycle.output(spec.name, ["cat", "/mnt/ro/hello.txt"]) == (0, b"from the host\n")
        code, _ = lifecycle.output(spec.name, ["sh", "-c", "echo x > /mnt/ro/new 2>/dev/null"])
        assert code != 0 and not (tmp_path / "new").exists()

    def test_stop_and_remove(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        lifecycle.runner.stop(spec.name, timeout=1)
        stopped = lifecycle.runner.inspect(spec.name)
        assert stopped.status in (EnvironmentStatus.EXITED, EnvironmentStatus.DEAD), stopped
        with pytest.raises(RunnerError):
            lifecycle.runner.exec(spec.name, ["true"], stdout=io.BytesIO())
        lifecycle.runner.stop(spec.name, timeout=1)  # stopping twice is fine
        if self.runner_cls.can_start:
            assert lifecycle.runner.start(spec.name).status is EnvironmentStatus.RUNNING
            with pytest.raises(RunnerError, match="force"):
                lifecycle.runner.remove(spec.name)
        lifecycle.runner.remove(spec.name, force=True)
        with pytest.raises(EnvironmentNotFoundError):
            lifecycle.runner.inspect(spec.name)
        assert spec.name not in {env.name for env in lifecycle.runner.list_environments()}

    def test_pause_and_resume(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        if not self.runner_cls.can_pause:
            _assert_unsupported(lambda: lifecycle.runner.pause(spec.name))
            _assert_unsupported(lambda: lifecycle.runner.resume(spec.name))
            return
        lifecycle.runner.pause(spec.name)
        assert lifecycle.runner.inspect(spec.name).status is EnvironmentStatus.PAUSED
        lifecycle.runner.resume(spec.name)
        assert lifecycle.runner.inspect(spec.name).status is EnvironmentStatus.RUNNING

    def test_logs(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec(command=("sh", "-c", "echo first; echo second; exec sleep 600"))
        lifecycle.create(spec)
        if not self.runner_cls.can_show_logs:
            _assert_unsupported(lambda: b"".join(lifecycle.runner.logs(spec.name)))
            return
        deadline = time.monotonic() + lifecycle.timeout
        text = b""
        while time.monotonic() < deadline and b"second" not in text:
            text = b"".join(lifecycle.runner.logs(spec.name))
            time.sleep(0.2)
        assert text == b"first\nsecond\n"
        assert b"".join(lifecycle.runner.logs(spec.name, tail=1)) == b"second\n"

    def test_top(self, lifecycle: _Lifecycle) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        if not self.runner_cls.can_list_processes:
            _assert_unsupported(lambda: lifecycle.runner.top(spec.name))
            return
        titles, rows = lifecycle.runner.top(spec.name)
        assert titles and any("sleep" in " ".join(row) for row in rows), (titles, rows)


def _assert_unsupported(call: Callable[[], object]) -> None:
    """An ability the runner does not declare is refused with one line, on a real environment."""
    with pytest.raises(RunnerUnsupportedError) as info:
        call()
    assert "\n" not in str(info.value), info.value


class _Lifecycle:
    """The lifecycle tests' helper: makes uniquely named specs and removes what it created."""

    def __init__(self, runner: Runner, image: str, timeout: float) -> None:
        self.runner = runner
        self.image = image
        self.timeout = timeout
        self.names: list[str] = []

    def spec(self, **fields: Any) -> EnvironmentSpec:
        name = f"envd-contract-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        fields.setdefault("command", ("sleep", "600"))
        return EnvironmentSpec(name=name, image=self.image, **fields)

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        return self.runner.create(spec, replace=replace)

    def output(self, name: str, argv: list[str], **kwargs: Any) -> tuple[int, bytes]:
        out = io.BytesIO()
        code = self.runner.exec(name, argv, stdout=out, stderr=io.BytesIO(), **kwargs)
        return code, out.getvalue()

    def cleanup(self) -> None:
        for name in self.names:
            # never created, or already removed by the test
            with contextlib.suppress(RunnerError):
                self.runner.remove(name, force=True)
