"""Builder type ``rootless``: BuildKit started by envd as the invoking unprivileged user.

Process mode: ``rootlesskit buildkitd`` runs detached as you, with no Docker and no root.
Build steps run as root only inside a user namespace; on the host every daemon process has
your uid. The socket is under ``$XDG_RUNTIME_DIR/buildkit/``; the state, cache and log in your
data and state dirs (see :mod:`envd_rootless.daemon`)::

    envd context create --name ci --builder rootless --use
    envd build --output type=image,name=registry.corp/me/env:ci,push=true

The address is the daemon's name (default ``buildkitd``, i.e. upstream's
``$XDG_RUNTIME_DIR/buildkit/buildkitd.sock``). ``ephemeral=true`` stops the daemon when the envd
command that started it ends, for CI jobs. Running it as root fails in one line.
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from envd_core import hookimpl
from envd_core.builder import (
    Builder,
    BuilderStatus,
    DaemonAction,
    DaemonChange,
    Report,
    silent,
    strip_scheme,
)
from envd_core.errors import ErrorKind, ValidationError
from envd_core.options import Option

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection
    from envd_rootless.daemon import Paths

__all__ = ["RootlessBuilder"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class RootlessBuilder(Builder):
    """``rootlesskit buildkitd`` as the current user, started and stopped by envd."""

    name = "rootless"
    summary = "rootlesskit buildkitd run as you (no Docker, no root)"
    address_help = "daemon name, e.g. buildkitd ($XDG_RUNTIME_DIR/buildkit/<name>.sock)"
    default_address = "buildkitd"
    can_bootstrap = True
    options = (
        Option("mode", "process: rootlesskit buildkitd as you; container: the "
               "moby/buildkit:<v>-rootless image in Docker (unprivileged)",
               kind="choice", choices=("process", "container"), default="process"),
        Option("net", "rootlesskit network: host, or slirp4netns (needs /dev/net/tun)",
               kind="choice", choices=("host", "slirp4netns"), default="host"),
        Option("config", "buildkitd.toml for the daemon (registries, GC such as gckeepstorage)",
               kind="path"),
        Option("buildkitd", "path of buildkitd (default: found on PATH)"),
        Option("rootlesskit", "path of rootlesskit (default: found on PATH)"),
        Option("buildkitd-flags", "extra buildkitd flags, e.g. --oci-worker-no-process-sandbox"),
        Option("ephemeral", "stop the daemon when the envd command that started it ends (CI)",
               kind="bool", default="false"),
        Option("image", "container mode: the rootless BuildKit image "
               "(default docker.io/moby/buildkit:v0.18.2-rootless)"),
        Option("network", "container mode: Docker network mode of the container (e.g. host)"),
        Option("cache-volume", "container mode: volume for the BuildKit state: auto, none, "
               "or a volume name", default="auto"),
        Option("process-sandbox", "container mode: false runs buildkitd with "
               "--oci-worker-no-process-sandbox, for engines that cannot unmask /proc",
               kind="bool", default="true"),
        Option("registry-config", "container mode: registry JSON as upstream `envd bootstrap "
               "--registry-config` takes", kind="path"),
    )
    _PROCESS_ONLY = ("net", "buildkitd", "rootlesskit", "ephemeral")
    _CONTAINER_ONLY = ("image", "network", "cache-volume", "process-sandbox", "registry-config")

    @classmethod
    def normalize_address(cls, address: str) -> str:
        value = strip_scheme(address, cls.name).strip("/")
        if not value:
            raise ValidationError("builder `rootless` needs a daemon name, e.g. buildkitd")
        if not _NAME_RE.match(value):
            raise ValidationError(
                f"`{value}` is not a rootless daemon name",
                hint="use letters, digits, `_`, `.` and `-` (it names the socket file)",
            )
        return value

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        _flags(options.get("buildkitd-flags"))
        mode = options.get("mode") or "process"
        wrong = cls._CONTAINER_ONLY if mode == "process" else cls._PROCESS_ONLY
        given = [key for key in wrong if key in options]
        if given:
            raise ValidationError(
                f"option `{given[0]}` does not apply to the rootless builder's {mode} mode",
                hint="drop it, or set --builder-opt mode="
                     + ("container" if mode == "process" else "process"),
            )

    @property
    def container_mode(self) -> bool:
        return (self.given_options.get("mode") or "process") == "container"

    def _delegate(self) -> Builder:
        from envd_rootless.container import delegate

        return delegate(self.address, self.given_options)

    @property
    def given_options(self) -> Mapping[str, str]:
        """The option values stored in the context, as strings."""
        return self.option_values

    @property
    def paths(self) -> Paths:
        from envd_rootless.daemon import Paths

        return Paths.for_name(self.address)

    def _command(self) -> list[str]:
        from envd_rootless.daemon import _tool, argv

        opts = self.given_options
        return argv(self.paths,
                    rootlesskit=_tool(opts.get("rootlesskit"), "rootlesskit", "rootlesskit"),
                    buildkitd=_tool(opts.get("buildkitd"), "buildkitd", "BuildKit"),
                    net=opts.get("net") or "host", config=opts.get("config"),
                    flags=_flags(opts.get("buildkitd-flags")))

    # -- lifecycle (the core calls these: envd bootstrap, auto-bootstrap, envd builder rm) --
    def needs_bootstrap(self) -> bool:
        """True when no live daemon answers to the pid file (no gRPC; never raises)."""
        from envd_rootless import daemon

        if self.container_mode:
            try:
                return self._delegate().needs_bootstrap()
            except Exception:  # noqa: BLE001 - unsure: let the connect that follows explain
                return False

        try:
            return daemon.running_pid(self.paths) is None
        except Exception:  # noqa: BLE001 - unsure: let the connect that follows explain
            return False

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        """Start the daemon unless it runs (``force``: restart it), and wait until it answers."""
        from envd_rootless import daemon

        if self.container_mode:  # Docker isolates it: no need to run envd as a normal user
            return self._delegate().bootstrap(force=force, report=report)
        daemon.refuse_root()
        paths = self.paths
        pid = daemon.running_pid(paths)
        if pid is not None and not force:
            return DaemonChange(DaemonAction.REUSED, f"rootless buildkitd, pid {pid}")
        command = self._command()  # checks the tools before anything is started
        daemon.stop(paths, report=report if pid is not None else silent)
        new_pid = daemon.start(paths, command, report=report, timeout=_ready_timeout())
        if self.option("ephemeral"):
            atexit.register(_stop_if_same, paths, new_pid)
        action = DaemonAction.RECREATED if pid is not None else DaemonAction.CREATED
        return DaemonChange(action, f"rootless buildkitd, pid {new_pid}, log {paths.log}")

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        """Stop the daemon; unless ``keep_state``, also delete its BuildKit state (the cache)."""
        import os
        import shutil

        from envd_rootless import daemon

        if self.container_mode:
            return self._delegate().remove(keep_state=keep_state, report=report)
        paths = self.paths
        stopped = daemon.stop(paths, report=report)
        had_state = os.path.exists(paths.data)
        if not keep_state:
            kit = self.given_options.get("rootlesskit") or shutil.which("rootlesskit")
            daemon.remove_data(paths, kit)
        if not stopped and not (had_state and not keep_state):
            return DaemonChange(DaemonAction.ABSENT, f"no rootless buildkitd `{self.address}`")
        return DaemonChange(DaemonAction.REMOVED,
                            "rootless buildkitd" + ("" if keep_state else " and its state"))

    def connect(self, *, timeout: float) -> Connection:
        """Connect to the socket. Starting the daemon is the core's job (auto-bootstrap
        before a build, ``envd bootstrap``)."""
        from envd_core.buildkit.errors import BuildkitConnectionError
        from envd_core.buildkit.transport import connect_unix
        from envd_rootless import daemon

        if self.container_mode:
            return self._delegate().connect(timeout=timeout)
        paths = self.paths
        if daemon.running_pid(paths) is None:
            raise BuildkitConnectionError(
                f"rootless BuildKit `{self.address}` is not running", kind=ErrorKind.NOT_FOUND,
                hint="start it with `envd bootstrap` (a build does it unless --no-bootstrap)")
        return connect_unix(paths.socket, timeout=timeout)

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """Probe without starting anything."""
        from envd_rootless import daemon

        if self.container_mode:
            return self._delegate().status(timeout=timeout)

        paths = self.paths
        if daemon.running_pid(paths) is None:
            return BuilderStatus(reachable=False, error_kind=ErrorKind.NOT_FOUND,
                                 error=f"rootless BuildKit `{self.address}` is not running "
                                       f"(no live daemon for `{paths.socket}`)")
        return _probe_unix(paths.socket, timeout)


def _probe_unix(socket_path: str, timeout: float) -> BuilderStatus:
    import time

    import attrs

    from envd_core.buildkit.client import probe
    from envd_core.buildkit.transport import connect_unix
    from envd_core.errors import EnvdError

    started = time.monotonic()
    try:
        connection = connect_unix(socket_path, timeout=timeout)
    except EnvdError as exc:
        return BuilderStatus(reachable=False, error=exc.message, error_kind=exc.kind)
    try:
        found: dict[str, Any] = probe(connection, timeout=timeout)
    finally:
        connection.close()
    if found.get("latency_ms") is None:
        found["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    known = {f.name for f in attrs.fields(BuilderStatus)}
    return BuilderStatus(**{k: v for k, v in found.items() if k in known})


def _flags(value: str | None) -> list[str]:
    import shlex

    try:
        words = shlex.split(value or "")
    except ValueError as exc:
        raise ValidationError(f"option `buildkitd-flags`: {exc}") from None
    for word in words:
        if word.split("=", 1)[0] in ("--addr", "--root", "--config"):
            raise ValidationError(
                f"option `buildkitd-flags` must not set `{word.split('=', 1)[0]}`: envd sets it")
    return words


def _ready_timeout() -> float:
    import os

    from envd_core.buildkit.transport import TIMEOUT_ENV, connect_timeout
    from envd_rootless.daemon import READY_DEFAULT

    return connect_timeout() if os.environ.get(TIMEOUT_ENV, "").strip() else READY_DEFAULT


def _stop_if_same(paths: Paths, pid: int) -> None:
    """atexit: stop an ephemeral daemon this process started (and no later one)."""
    from envd_rootless import daemon
    from envd_rootless.report import stderr_reporter

    if daemon.running_pid(paths) == pid:
        daemon.stop(paths, report=stderr_reporter)


@hookimpl
def envd_builder_types() -> list[type[Builder]]:
    return [RootlessBuilder]
