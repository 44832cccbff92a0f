"""The base class every runner type subclasses: the whole lifecycle of an environment.

A *runner type* (``docker``, ``envd-server``) runs the environments a builder produced. It
creates an environment from an :class:`~envd_core.environment.EnvironmentSpec`, lists, inspects,
stops and removes it, and runs commands in it; optionally it starts, pauses, shows logs and
processes, and loads, pushes, lists and removes images. ``envd up/down/envs/exec`` call only these
methods, so they work unchanged on every runner. Runner types live in plugins and are registered
through the ``envd_runner_types`` hook.

Example::

    from envd_core import hookimpl
    from envd_core.runner import Runner

    class NomadRunner(Runner):
        name = "nomad"
        summary = "run environments as Nomad jobs"
        address_help = "http(s)://host:port"
        supports_mounts = True

        def create(self, spec, *, replace=False): ...
        def list_environments(self): ...
        def inspect(self, name): ...
        def stop(self, name, *, timeout=10.0): ...
        def remove(self, name, *, force=False): ...
        def exec(self, name, argv, **kwargs): ...

    @hookimpl
    def envd_runner_types():
        return [NomadRunner]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar

from envd_core.builder import strip_scheme
from envd_core.environment import (
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    ImageInfo,
    RunnerStatus,
)
from envd_core.errors import RunnerError, ValidationError
from envd_core.options import Option, option_value

if TYPE_CHECKING:
    from pathlib import Path

    from envd_core.environments.sshconfig import SSHEntry

__all__ = [
    "EnvironmentExistsError",
    "EnvironmentNotFoundError",
    "Runner",
    "RunnerUnsupportedError",
]


class EnvironmentNotFoundError(RunnerError):
    """The named environment does not exist on this runner."""


class EnvironmentExistsError(RunnerError):
    """An environment of that name exists and ``replace`` was not asked for."""


class RunnerUnsupportedError(RunnerError):
    """The runner does not offer this optional ability (its capability flag is false)."""


class Runner(ABC):
    """Base class of runner types.

    Six methods are **required**: :meth:`create`, :meth:`list_environments`, :meth:`inspect`,
    :meth:`stop`, :meth:`remove` and :meth:`exec`. Everything else has a safe default that raises
    :class:`RunnerUnsupportedError` naming the runner, and a capability flag the CLI reads before
    offering it. Set the flag to ``True`` when you override the method; the contract tests in
    :mod:`envd_core.testing` check that flags and overrides agree.

    Errors are :class:`~envd_core.errors.RunnerError` with one line (what, why, what to do);
    a missing environment is :class:`EnvironmentNotFoundError`, a name clash
    :class:`EnvironmentExistsError`.
    """

    #: **Required.** The type name users pass to ``--runner`` (``docker``, ``envd-server``).
    name: ClassVar[str]
    #: One line for ``envd plugins ls`` and error messages.
    summary: ClassVar[str] = ""
    #: What an address looks like, for help and error messages.
    address_help: ClassVar[str] = "address"
    #: Options accepted with ``--runner-opt key=value``.
    options: ClassVar[tuple[Option, ...]] = ()
    #: Modules this runner imports lazily (inside its methods) that envd's resident process
    #: (docs/resident.md) should import once up front, e.g. ``("docker",)``. Importing them
    #: must not start threads, open connections or read per-user state.
    preload: ClassVar[tuple[str, ...]] = ()

    #: :meth:`load_image` can receive a docker-format image tarball.
    can_load_images: ClassVar[bool] = False
    #: :meth:`push_image` pushes from the runner's image store.
    can_push_images: ClassVar[bool] = False
    #: :meth:`images` and :meth:`remove_image` manage the runner's image store.
    can_manage_images: ClassVar[bool] = False
    #: :meth:`start` restarts a stopped environment.
    can_start: ClassVar[bool] = False
    #: :meth:`pause` and :meth:`resume` freeze and thaw an environment.
    can_pause: ClassVar[bool] = False
    #: :meth:`logs` returns the environment's output.
    can_show_logs: ClassVar[bool] = False
    #: :meth:`top` lists the environment's processes.
    can_list_processes: ClassVar[bool] = False
    #: :meth:`exec` honours ``tty=True``.
    supports_tty: ClassVar[bool] = False
    #: ``EnvironmentSpec.mounts`` (host bind mounts) are honoured; else ``create`` refuses them.
    supports_mounts: ClassVar[bool] = False
    #: ``Resources.gpus`` is honoured; otherwise ``create`` refuses a GPU request.
    supports_gpus: ClassVar[bool] = False
    #: :meth:`login` and :meth:`logout` keep a credential for the runner (``envd login``).
    can_login: ClassVar[bool] = False
    #: Environments start from an image the runner pulls from a registry (envd-server): ``envd
    #: up`` pushes its build there (``--output type=image,name=<tag>,push=true``) instead of
    #: loading it into the runner.
    pulls_images: ClassVar[bool] = False
    #: ``create`` hands ``EnvironmentSpec.host_key`` to the environment's SSH server (never into
    #: an image layer), so the SSH entry can check the server's key strictly against the
    #: known_hosts file envd keeps. Runners whose SSH goes through a gateway (envd-server) leave
    #: it ``False`` and keep upstream's unchecked entry.
    accepts_host_key: ClassVar[bool] = False
    #: ``"module:function"`` of a light lister, or ``None``. ``envd envs ls`` calls it instead
    #: of :meth:`list_environments`, on the full CLI and on its fast path alike, as
    #: ``function(address, options, context=NAME)``; it returns
    #: :class:`envd_core.listing.ListedEnvironment` records sorted by name and raises
    #: :class:`~envd_core.errors.RunnerError` lines. Its module may import only the standard
    #: library and the light core modules (no attrs, click, pluggy or client SDKs): the fast
    #: path finds it in the plugin index and imports nothing else of the plugin. Declare one
    #: only when ``list_environments`` is built on the same function, so there is one listing.
    lister: ClassVar[str | None] = None

    def __init__(self, address: str | None, options: Mapping[str, str] | None = None) -> None:
        self.address = address
        #: The values given with `--runner-opt` (strings, as stored).
        self.option_values: dict[str, str] = dict(options or {})

    # -- addresses and options -------------------------------------------------------------
    @classmethod
    def normalize_address(cls, address: str) -> str | None:
        """Return the address to store, ``None`` when empty (the runner's default applies)."""
        value = address.strip()
        if not value:
            return None
        if any(ch.isspace() for ch in value):
            raise ValidationError(f"runner address must not contain whitespace: `{address}`")
        return strip_scheme(value, cls.name) or None

    @classmethod
    def options_declared(cls) -> tuple[Option, ...]:
        """The options ``--runner-opt`` accepts (override to compute them)."""
        return tuple(cls.options)

    def option(self, key: str) -> Any:
        """The converted value of option ``key`` (its declared default when unset)."""
        return option_value(self.options_declared(), self.option_values, key)

    # -- required: the lifecycle ------------------------------------------------------------
    @abstractmethod
    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        """**Required.** Create the environment and start it; return it as :meth:`inspect` would.

        With ``replace=False`` an existing environment of that name raises
        :class:`EnvironmentExistsError`; with ``replace=True`` it is removed (forcibly) first, as
        upstream ``envd up --force`` does. Ports with ``host_port=None`` get free host ports, and
        the returned record carries the real ones. Refuse what the runner cannot honour (mounts,
        GPUs) with a :class:`RunnerError` rather than silently dropping it, and leave nothing
        behind when the start fails.
        """

    @abstractmethod
    def list_environments(self) -> list[Environment]:
        """**Required.** Every envd environment on this runner (never other workloads), by name."""

    @abstractmethod
    def inspect(self, name: str) -> Environment:
        """**Required.** The environment ``name``; :class:`EnvironmentNotFoundError` if missing."""

    @abstractmethod
    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        """**Required.** Stop ``name`` (graceful, killed after ``timeout`` seconds).

        Stopping a stopped environment is not an error; a missing one is
        :class:`EnvironmentNotFoundError`.
        """

    @abstractmethod
    def remove(self, name: str, *, force: bool = False) -> None:
        """**Required.** Remove ``name``; ``force`` removes it even while it runs.

        A missing environment is :class:`EnvironmentNotFoundError`; a running one without
        ``force`` is a :class:`RunnerError` that says to stop it or use force.
        """

    @abstractmethod
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
        """**Required.** Run ``argv`` in the running environment ``name``; return its exit code.

        Output is streamed as it comes (never collected first) to ``stdout``/``stderr``, binary
        streams that default to the caller's own. ``stdin``, when given, is read in chunks and
        sent until its end, then the command's input is closed. With ``tty=True`` (only if
        :attr:`supports_tty`) the command gets a terminal and its output, stderr included,
        arrives on ``stdout``. A missing environment is :class:`EnvironmentNotFoundError`, one
        that is not running a :class:`RunnerError`.
        """

    # -- optional: more lifecycle -----------------------------------------------------------
    def start(self, name: str) -> Environment:
        """Start a stopped environment again (:attr:`can_start`)."""
        raise self._unsupported("start environments")

    def pause(self, name: str) -> None:
        """Freeze every process of ``name`` (:attr:`can_pause`)."""
        raise self._unsupported("pause environments")

    def resume(self, name: str) -> None:
        """Thaw a paused environment (:attr:`can_pause`)."""
        raise self._unsupported("resume environments")

    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[bytes]:
        """The environment's output as chunks (:attr:`can_show_logs`).

        ``tail`` limits it to the last lines; ``follow`` keeps the iterator open for new output
        until the environment stops or the caller stops iterating.
        """
        raise self._unsupported("show logs")

    def top(self, name: str) -> tuple[list[str], list[list[str]]]:
        """The processes of ``name`` as (column titles, rows) (:attr:`can_list_processes`)."""
        raise self._unsupported("list processes")

    # -- optional: images -------------------------------------------------------------------
    def load_image(self, tarball: IO[bytes]) -> list[str]:
        """Load a docker-format image tarball (read in chunks); return the loaded image names.

        Called by ``envd build`` when the output must reach this runner (:attr:`can_load_images`).
        """
        raise self._unsupported("load images")

    def push_image(self, name: str) -> str | None:
        """Push image ``name`` from the runner's store with the user's registry credentials.

        Returns the pushed digest when known (:attr:`can_push_images`).
        """
        raise self._unsupported("push images")

    def images(self) -> list[ImageInfo]:
        """The images in the runner's store (:attr:`can_manage_images`)."""
        raise self._unsupported("list images")

    def find_image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` (a name or an id) in the runner's store, or ``None``.

        The default scans :meth:`images`; override it when the store can look one image up
        directly (listing every image is slow on a busy Docker daemon).
        """
        from envd_core.environments.operations import match_image

        return match_image(self.images(), ref)

    def remove_image(self, name: str, *, force: bool = False) -> None:
        """Remove image ``name`` from the runner's store (:attr:`can_manage_images`)."""
        raise self._unsupported("remove images")

    # -- optional: authentication ---------------------------------------------------------
    def login(
        self,
        context: str,
        *,
        username: str | None = None,
        password: str | None = None,
        public_key: str | None = None,
    ) -> str:
        """Authenticate as ``username`` and keep the credential for ``context`` (:attr:`can_login`).

        Without a password the runner may register the user first, as upstream does.
        ``public_key`` (OpenSSH text) is registered for SSH when the runner has a gateway. The
        credential is stored per context with mode 0600 and never printed or logged. Returns
        the runner's status line (``Login succeeded``).
        """
        raise self._unsupported("log in")

    def logout(self, context: str) -> bool:
        """Forget the credential kept for ``context``; ``False`` if none (:attr:`can_login`)."""
        raise self._unsupported("log out")

    def import_login(self, context: str, *, login_name: str, token: str,
                     dry_run: bool = False) -> tuple[str, str]:
        """Keep a login made elsewhere (upstream envd's ``auth`` file) for ``context``.

        Stored as :meth:`login` stores its own (0600, never printed), in the runner's own
        store. Returns ``(action, reason)``: ``imported``; ``unchanged`` when that login is kept
        already; ``skipped`` with a reason when ``context`` holds another login, which is never
        replaced. With ``dry_run`` nothing is written (:attr:`can_login`).
        """
        raise self._unsupported("import logins")

    # -- optional: the runner itself --------------------------------------------------------
    def status(self, *, timeout: float = 3.0) -> RunnerStatus:
        """Probe the runner: reachable or not, and its version when it says.

        The default lists environments and reports any :class:`RunnerError` as unreachable;
        override to report a version or to probe more cheaply. Never raises.
        """
        try:
            self.list_environments()
        except RunnerError as exc:
            return RunnerStatus(reachable=False, error=str(exc))
        return RunnerStatus(reachable=True)

    # -- optional: SSH ------------------------------------------------------------------------
    def ssh_entry(self, environment: Environment, *, host: str,
                  identity_file: Path) -> SSHEntry | None:
        """The ``~/.ssh/config`` entry ``host`` (``<name>.envd``) that reaches ``environment``.

        The default connects straight to :attr:`Environment.ssh` as user ``envd`` with agent
        forwarding, as upstream's Docker runner writes it; ``None`` when the environment has no
        SSH endpoint. Override when SSH goes through a gateway (envd-server: another user name,
        no agent forwarding, the other ports as ``LocalForward`` lines).
        """
        from envd_core.environments.sshconfig import SSHEntry

        if environment.ssh is None:
            return None
        hostname = "127.0.0.1" if environment.ssh.host in ("0.0.0.0", "") else environment.ssh.host
        return SSHEntry(host=host, hostname=hostname, port=environment.ssh.port,
                        identity_file=str(identity_file))

    # -- helpers for subclasses -------------------------------------------------------------
    def _unsupported(self, what: str) -> RunnerUnsupportedError:
        return RunnerUnsupportedError(
            f"runner `{self.name}` cannot {what}",
            hint="use a context whose runner can (see `envd plugins ls`)",
        )

    def require_running(self, environment: Environment) -> None:
        """Raise a clear :class:`RunnerError` unless ``environment`` is running (for exec)."""
        if environment.status is not EnvironmentStatus.RUNNING:
            raise RunnerError(
                f"environment `{environment.name}` is {environment.status.value}, not running",
                hint=f"start it again (envd up) or remove it (envd down {environment.name})",
            )
