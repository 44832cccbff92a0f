"""Test support for envd and its plugins: fixtures and contract tests (a pytest plugin).

The repository's top-level ``conftest.py`` loads this module with
``pytest_plugins = ["envd_core.testing"]``; an out-of-tree plugin package does the same in its own
``conftest.py``. Importing it is cheap (no grpc, no docker): only pytest, click and the core.

Fixtures
    ``envd_config_dir``  a temporary ``ENVD_CONFIG_DIR``, every other ``ENVD_*`` variable removed,
                         and an empty working directory (no stray ``.envd-context`` applies).
    ``plugins``          a fresh :class:`~envd_core.plugins.Plugins` without entry points.
    ``register_plugin``  registers a throwaway in-process plugin; always unregistered afterwards.
    ``cli``              runs ``envd …`` in-process through :func:`envd_core.cli.run` around
                         ``plugins`` and returns exit code, stdout and stderr.

Contract tests
    Subclass :class:`BuilderContract`, :class:`RunnerContract` or :class:`StoreContract` in a
    ``test_*.py`` file and set the class under test::

        from envd_core.testing import BuilderContract

        class TestTcpBuilder(BuilderContract):
            builder_cls = TcpBuilder
            valid_address = "127.0.0.1:1234"

    :class:`RunnerContract` (in :mod:`envd_core.runner_contract`) also runs a real environment
    through its whole lifecycle when the subclass sets ``lifecycle_image``; otherwise those tests
    are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, ClassVar

import attrs
import pytest

from envd_core.builder import Builder
from envd_core.contexts.model import DEFAULT_NAME, Context, default_context
from envd_core.contexts.store import ContextStore
from envd_core.environment import Environment, EnvironmentSpec
from envd_core.errors import RunnerError, ValidationError
from envd_core.hookspecs import hookimpl
from envd_core.options import Option
from envd_core.plugins import Plugins
from envd_core.runner import EnvironmentNotFoundError, Runner
from envd_core.runner_contract import RunnerContract

__all__ = [
    "BuilderContract",
    "CliResult",
    "EnvdCli",
    "RunnerContract",
    "StoreContract",
    "StubBuilder",
    "StubRunner",
    "assert_one_error",
    "builder_capability_problems",
    "clean_envd_environ",
    "make_plugin",
]


# -- throwaway plugins -----------------------------------------------------------------------
def make_plugin(
    *,
    builders: Sequence[Any] | None = None,
    runners: Sequence[Any] | None = None,
    stores: Sequence[Any] | None = None,
    build_functions: Mapping[str, Callable[..., Any]] | None = None,
) -> object:
    """An in-process plugin object implementing the hooks for the given lists.

    Only the hooks for arguments that are not ``None`` are implemented, and each returns its
    argument as given, so a test can make a plugin return anything (even invalid values).
    """
    plugin = SimpleNamespace()
    if builders is not None:
        plugin.envd_builder_types = hookimpl(lambda: builders)
    if runners is not None:
        plugin.envd_runner_types = hookimpl(lambda: runners)
    if stores is not None:
        plugin.envd_context_stores = hookimpl(lambda: stores)
    if build_functions is not None:
        plugin.envd_build_functions = hookimpl(lambda: build_functions)
    return plugin


class StubBuilder(Builder):
    """A builder type for tests that never connects (contracts pair it with a runner)."""

    name = "envd-testing-builder"
    summary = "test builder that cannot connect"
    address_help = "any word"

    def connect(self, *, timeout: float) -> Any:
        from envd_core.errors import BuilderError

        raise BuilderError(f"`{self.url}` is a test builder and cannot connect")


class StubRunner(Runner):
    """A runner type for tests that runs nothing (contracts pair it with a builder).

    It has no environments: listing is empty, looking one up finds nothing, and creating or
    running one is refused with one line.
    """

    name = "envd-testing-runner"
    summary = "test runner that runs nothing"

    def _refuse(self) -> RunnerError:
        return RunnerError(f"runner `{self.name}` is a test runner and runs nothing")

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        raise self._refuse()

    def list_environments(self) -> list[Environment]:
        return []

    def inspect(self, name: str) -> Environment:
        raise EnvironmentNotFoundError(f"environment `{name}` not found on runner `{self.name}`")

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        self.inspect(name)

    def remove(self, name: str, *, force: bool = False) -> None:
        self.inspect(name)

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> int:
        self.inspect(name)
        raise self._refuse()


# -- environment and CLI ---------------------------------------------------------------------
def clean_envd_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``ENVD_*`` variable (and the ones that move the config dir)."""
    for key in list(os.environ):
        if key.startswith("ENVD_") or key in ("XDG_CONFIG_HOME", "_ENVD_COMPLETE"):
            monkeypatch.delenv(key, raising=False)


@attrs.frozen
class CliResult:
    """What one in-process ``envd`` invocation produced."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __str__(self) -> str:  # shown by pytest when an assertion on the result fails
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def assert_one_error(result: CliResult, code: int = 1) -> str:
    """Assert ``result`` failed with exit ``code`` and said so in one ``envd:`` line (+ a hint).

    The house rule for bad input: one line (what, why, what to do), an optional ``hint:`` line,
    never a traceback. Returns stderr for further checks.
    """
    assert result.exit_code == code, result
    lines = result.stderr_lines
    assert 1 <= len(lines) <= 2, result
    assert lines[0].startswith("envd: "), result
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), result
    assert "Traceback" not in result.stderr
    return result.stderr


class EnvdCli:
    """Runs ``envd`` in-process, exactly as the console script does, around given plugins."""

    def __init__(self, plugins_factory: Callable[[], Plugins]) -> None:
        from envd_core.cli import create_cli

        self.command = create_cli(plugins_factory)

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> CliResult:
        """Run ``envd ARGS``; ``env`` sets (or, with ``None``, removes) variables for the call."""
        from envd_core.cli import run

        stdout, stderr = io.StringIO(), io.StringIO()
        with (
            _patched_environ(env or {}),
            _patched_stdin(input or ""),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            code = run(self.command, list(args))
        return CliResult(code, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def _patched_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _patched_stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def envd_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, not yet created ``ENVD_CONFIG_DIR``; clean ``ENVD_*`` env; an empty cwd; an
    empty ``HOME``, so nothing of the real user's (upstream envd's contexts, which bring the
    first-run import hint; ``~/.ssh/config``; key pairs) reaches the test."""
    clean_envd_environ(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    config = tmp_path / "envd-config"
    monkeypatch.setenv("ENVD_CONFIG_DIR", str(config))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return config


@pytest.fixture
def plugins(envd_config_dir: Path) -> Plugins:
    """A fresh plugin manager with only the core plugin (entry points are not loaded)."""
    return Plugins.create(entry_points=False)


@pytest.fixture
def register_plugin(plugins: Plugins) -> Iterator[Callable[..., str]]:
    """``register_plugin(obj, name=None)`` registers a throwaway plugin on ``plugins``.

    ``obj`` is a module, class or object with ``@hookimpl`` functions (see :func:`make_plugin`).
    Returns the name it was registered under; every plugin is unregistered after the test.
    """
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        chosen = name or f"throwaway-{len(names) + 1}"
        names.append(chosen)
        plugins.register(plugin, name=chosen)
        return chosen

    yield register
    for name in reversed(names):
        plugins.unregister(name)


@pytest.fixture
def cli(plugins: Plugins) -> EnvdCli:
    """Run ``envd`` in-process around the ``plugins`` fixture: ``cli("context", "ls")``."""
    return EnvdCli(lambda: plugins)


# -- contract tests --------------------------------------------------------------------------
def _check_options(options: Sequence[Any], owner: str) -> None:
    seen: set[str] = set()
    for opt in options:
        assert isinstance(opt, Option), f"{owner}: options must be Option objects, got {opt!r}"
        assert opt.name and opt.name.strip() == opt.name, f"{owner}: bad option name {opt.name!r}"
        assert "=" not in opt.name and "," not in opt.name, f"{owner}: bad option {opt.name!r}"
        assert opt.name not in seen, f"{owner}: option `{opt.name}` declared twice"
        seen.add(opt.name)
        assert opt.help.strip(), f"{owner}: option `{opt.name}` has no help"
        if opt.kind == "choice":
            assert opt.choices, f"{owner}: choice option `{opt.name}` lists no choices"
        if opt.default is not None and opt.kind != "path":
            # a declared default must be a value the option itself accepts
            assert opt.parse(opt.default) is not None


def _check_type_name(cls: object, base: type) -> str:
    # `object`: a plugin may hand over anything; the contract checks it at run time
    assert isinstance(cls, type) and issubclass(cls, base)
    name = getattr(cls, "name", None)
    assert isinstance(name, str) and name, f"{cls.__qualname__} has no `name`"
    assert name == name.strip() and not any(ch.isspace() for ch in name)
    assert "://" not in name and "/" not in name
    assert "\n" not in getattr(cls, "summary", ""), "summary must be one line"
    return name


def builder_capability_problems(cls: type[Builder]) -> list[str]:
    """What is inconsistent between ``cls``'s capability flags and the methods it overrides.

    A flag promises a method: ``can_push`` → ``push``; ``can_bootstrap`` → ``needs_bootstrap``,
    ``bootstrap`` and ``remove``; ``exporter_applies_config = False`` → ``apply_image_config``.
    Flags must be real bools and ``exporters`` a frozenset of names. Empty means consistent.
    """
    problems: list[str] = []
    for flag in ("can_push", "can_bootstrap", "supports_merge_op", "exporter_applies_config"):
        if not isinstance(getattr(cls, flag), bool):
            problems.append(f"`{flag}` must be True or False")
    exporters: object = cls.exporters  # declared a frozenset; a plugin may assign anything
    if not isinstance(exporters, frozenset) or not all(isinstance(e, str) and e for e in exporters):
        problems.append("`exporters` must be a frozenset of exporter names")
    promised = {
        "push": cls.can_push,
        "needs_bootstrap": cls.can_bootstrap,
        "bootstrap": cls.can_bootstrap,
        "remove": cls.can_bootstrap,
        "apply_image_config": not cls.exporter_applies_config,
    }
    for method, needed in promised.items():
        if needed and getattr(cls, method) is getattr(Builder, method):
            flag = {"push": "can_push = True", "apply_image_config":
                    "exporter_applies_config = False"}.get(method, "can_bootstrap = True")
            problems.append(f"`{flag}` but `{method}` is not overridden")
    return problems


class BuilderContract:
    """Contract every builder type satisfies. Subclass as ``Test…`` and set ``builder_cls``."""

    builder_cls: ClassVar[type[Builder]]
    #: An address (without scheme) that :meth:`Builder.normalize_address` accepts.
    valid_address: ClassVar[str] = "127.0.0.1:1234"

    def test_name_is_a_plain_word(self) -> None:
        _check_type_name(self.builder_cls, Builder)

    def test_is_concrete(self) -> None:
        assert not inspect.isabstract(self.builder_cls), self.builder_cls.__abstractmethods__

    def test_options_declared_properly(self) -> None:
        _check_options(self.builder_cls.options_declared(), f"builder `{self.builder_cls.name}`")

    def test_exporters_are_names(self) -> None:
        exporters: object = self.builder_cls.exporters
        assert isinstance(exporters, frozenset) and all(isinstance(e, str) for e in exporters)

    def test_capabilities_are_consistent(self) -> None:
        assert builder_capability_problems(self.builder_cls) == []

    def test_status_never_raises(self) -> None:
        from envd_core.builder import BuilderStatus

        cls = self.builder_cls
        status = cls(cls.normalize_address(self.valid_address)).status(timeout=0.5)
        assert isinstance(status, BuilderStatus)
        assert status.reachable or (status.error and status.error_kind is not None), status
        assert isinstance(status.to_json()["error_kind"], (str, type(None)))

    def test_unmanaged_daemon_is_left_alone(self) -> None:
        from envd_core.builder import DaemonAction

        cls = self.builder_cls
        if cls.can_bootstrap:
            pytest.skip("the builder manages its daemon; bootstrap is tested against a real one")
        builder = cls(cls.normalize_address(self.valid_address))
        assert builder.needs_bootstrap() is False
        assert builder.bootstrap().action is DaemonAction.NONE
        assert builder.remove(keep_state=True).action is DaemonAction.NONE

    def test_normalize_address_is_idempotent(self) -> None:
        once = self.builder_cls.normalize_address(self.valid_address)
        assert self.builder_cls.normalize_address(once) == once

    def test_scheme_is_optional_and_never_doubled(self) -> None:
        cls = self.builder_cls
        bare = cls.normalize_address(self.valid_address)
        assert cls.normalize_address(f"{cls.name}://{bare}") == bare
        url = cls(bare).url
        assert url == f"{cls.name}://{bare}"
        assert f"{cls.name}://{cls.name}://" not in url and "tcp://tcp://" not in url

    def test_empty_address_refused(self) -> None:
        with pytest.raises(ValidationError):
            self.builder_cls.normalize_address("")

    def test_default_address_is_valid(self) -> None:
        default = self.builder_cls.default_address
        if default is not None:
            assert self.builder_cls.normalize_address(default)

    def test_registers_through_the_hook(
        self, plugins: Plugins, register_plugin: Callable[..., str]
    ) -> None:
        name = register_plugin(make_plugin(builders=[self.builder_cls]))
        assert plugins.builder_type(self.builder_cls.name) is self.builder_cls
        assert plugins.provider_of("builders", self.builder_cls.name) == name

    def test_context_create_and_ls(self, cli: EnvdCli, register_plugin: Callable[..., str]) -> None:
        import json

        cls = self.builder_cls
        register_plugin(make_plugin(builders=[cls], runners=[StubRunner]))
        created = cli("context", "create", "--name", "contract", "--builder", cls.name,
                      "--builder-address", f"{cls.name}://{self.valid_address}",
                      "--runner", StubRunner.name)
        assert created.exit_code == 0, created
        rows = json.loads(cli("context", "ls", "--format", "json").stdout)
        row = next(r for r in rows if r["context"] == "contract")
        assert row["builder_addr"] == f"{cls.name}://{cls.normalize_address(self.valid_address)}"


class StoreContract:
    """Contract every context store satisfies. Set ``store_cls``; override :meth:`make_store`."""

    store_cls: ClassVar[type[ContextStore]]

    def make_store(self, directory: Path) -> ContextStore:
        """A store writing under ``directory`` (override for stores that live elsewhere)."""
        return self.store_cls(directory)

    def test_name_is_a_plain_word(self) -> None:
        _check_type_name(self.store_cls, ContextStore)

    def test_first_load_creates_current_default(self, envd_config_dir: Path) -> None:
        contexts = self.make_store(envd_config_dir).load()
        assert contexts.current == DEFAULT_NAME
        assert contexts.contexts[DEFAULT_NAME] == default_context()

    def test_transaction_persists(self, envd_config_dir: Path) -> None:
        store = self.make_store(envd_config_dir)
        added = Context(name="persisted", builder="tcp", builder_address="h:1",
                        builder_options={"k": "v"}, description="d")
        with store.transaction() as contexts:
            contexts.add(added)
            contexts.use("persisted")
        again = self.make_store(envd_config_dir).load()
        assert again.contexts["persisted"] == added
        assert again.current == "persisted"
        assert list(again.contexts) == [DEFAULT_NAME, "persisted"]

    def test_failed_transaction_changes_nothing(self, envd_config_dir: Path) -> None:
        store = self.make_store(envd_config_dir)
        store.load()
        with pytest.raises(RuntimeError), store.transaction() as contexts:
            contexts.add(Context(name="lost", builder="tcp", builder_address="h:1"))
            raise RuntimeError("abort")
        assert "lost" not in self.make_store(envd_config_dir).load().contexts


# -- installed-plugin helpers (real dist-info entry points, the real console script) -----


@pytest.fixture
def entry_point_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """``add(ep_name, source)`` writes a module and a dist-info declaring it in group ``envd``.

    The directory is put on ``sys.path`` (and returned, for ``PYTHONPATH`` of subprocesses), so
    :mod:`importlib.metadata` finds the entry point exactly as it finds an installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def add(ep_name: str, source: str, *, dist: str | None = None) -> Path:
        module = f"envd_testplugin_{ep_name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist_name = dist or f"envd-test-{ep_name}"
        info = site / f"{dist_name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[envd]\n{ep_name} = {module}\n")
        return site

    yield add
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def envd_script() -> str:
    """The installed ``envd`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("envd")
    if not script.exists():
        pytest.skip("the envd console script is not installed (pip install -e .)")
    return os.fspath(script)


# -- the fast path against the full CLI, in fresh processes ------------------------------------
_CLI_PROBE = """
    import json, sys
    mode, report_path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.argv = ["envd", *args]
    code = 0
    try:
        if mode == "full":
            from envd_core.cli.app import main
            main(args)
        else:
            from envd_core.cli import main
            main()
    except SystemExit as exc:
        code = exc.code or 0
    with open(report_path, "w") as out:
        json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, out)
"""


class CliProbe:
    """``envd`` in a throwaway HOME / config / cache, each run a fresh process.

    ``run(..., mode="main")`` goes through the console entry point (the fast path where it
    serves), ``mode="full"`` straight into the click CLI; each returns ``(report, stdout,
    stderr)`` where the report holds the exit code and the top-level modules the process
    imported, so a plugin's tests can hold its light lister to the full CLI's bytes.
    """

    def __init__(self, tmp: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.tmp = tmp
        self.probe = tmp / "probe.py"
        self.probe.write_text(textwrap.dedent(_CLI_PROBE))
        (tmp / "home").mkdir()
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp / "home"), "LANG": "C.UTF-8",
                    "ENVD_CONFIG_DIR": str(tmp / "cfg"), "ENVD_CACHE_DIR": str(tmp / "cache"),
                    "ENVD_TEAM_CONTEXTS_DIR": str(tmp / "team"),
                    # the probe inspects the imports of this very process, never a resident's
                    "ENVD_RESIDENT": "0", **(extra_env or {})}

    def run(self, *args: str, mode: str = "main") -> tuple[dict[str, Any], str, str]:
        import json
        import subprocess

        report = self.tmp / "report.json"
        report.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, str(self.probe), mode, str(report), *args],
                              env=self.env, cwd=self.tmp, capture_output=True, text=True,
                              timeout=120, check=False, stdin=subprocess.DEVNULL)
        assert report.exists(), done.stderr
        return json.loads(report.read_text()), done.stdout, done.stderr
