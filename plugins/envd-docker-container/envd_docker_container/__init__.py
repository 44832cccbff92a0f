"""Builder type ``docker-container``: envd starts and owns a BuildKit container in Docker.

Upstream envd's ``envd context create`` default. The address is the container's name
(default ``envd_buildkitd``), optionally followed by ``?context=<docker context>`` to use the
engine a docker CLI context points at::

    envd context create --name local --builder docker-container \\
        --builder-address envd_buildkitd --builder-opt network=host --use
    envd build            # creates the container on first use, then reuses it

envd reaches buildkitd by running ``buildctl dial-stdio`` in the container through the Docker
Engine API (exec + an attached stream); no ``docker`` CLI is needed. Bootstrap pulls the image,
creates the container (privileged where the engine allows it, a restricted capability set where
it does not), a cache volume that outlives the container, and waits until BuildKit answers.
Heavy imports (the Docker SDK, grpc) happen only in the methods that need them.
"""

from __future__ import annotations

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
    from envd_docker_container.engine import Engine
    from envd_docker_container.lifecycle import Outcome
    from envd_docker_container.settings import DaemonSpec

__all__ = ["DEFAULT_IMAGE", "DockerContainerBuilder", "split_address"]

#: The BuildKit release this client is tested against (upstream envd pins a moby/buildkit tag
#: the same way; it uses v0.19.0).
DEFAULT_IMAGE = "docker.io/moby/buildkit:v0.18.2"

# Docker's own rule for container names; refusing early means nothing is half-created later.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_CONTEXT_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$")


def split_address(address: str) -> tuple[str, str | None]:
    """``name?context=x`` -> (``name``, ``x``); ValidationError for anything else."""
    name, sep, query = address.partition("?")
    if not _NAME_RE.match(name):
        raise ValidationError(
            f"`{name}` is not a valid container name",
            hint="use at least two characters: letters, digits, `_`, `.` or `-`, "
                 "starting with a letter or digit (Docker's rule)",
        )
    context = None
    if sep:
        # Not URL-decoded: `+` is legal in docker context names and must stay a `+`.
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not eq:
                raise ValidationError(f"bad query `?{query}` in builder address `{address}`")
            if key != "context":
                raise ValidationError(
                    f"builder `docker-container` does not know `?{key}=` in `{address}`",
                    hint="the only parameter is ?context=<docker context name>",
                )
            if not _CONTEXT_RE.match(value):
                raise ValidationError(f"`{value}` is not a docker context name (in `{address}`)")
            context = value
    return name, context


class DockerContainerBuilder(Builder):
    """A buildkitd that envd runs in a Docker container and reaches through exec."""

    name = "docker-container"
    summary = "BuildKit in a Docker container that envd bootstraps (upstream's default)"
    preload = ("docker", "docker.errors")
    address_help = "container name, optionally ?context=<docker context>"
    default_address = "envd_buildkitd"
    can_bootstrap = True
    options = (
        Option("image", "BuildKit image to run", default=DEFAULT_IMAGE),
        Option("config", "a buildkitd.toml to start from (registry options are added to it)",
               kind="path"),
        Option("registry-config", "registry JSON as upstream `envd bootstrap --registry-config` "
               "takes: name, mirror, use_http, ca, cert, key per registry", kind="path"),
        Option("mirror", "Docker Hub mirror(s), comma-separated (upstream --dockerhub-mirror)"),
        Option("insecure-registries", "registries reached over plain HTTP, comma-separated"),
        Option("registry-ca", "CA files per registry: host=/path/ca.pem, comma-separated"),
        Option("network", "Docker network mode of the container (e.g. host); default: Docker's"),
        Option("cache-volume", "volume for /var/lib/buildkit: auto (<name>_state), none, or a "
               "volume name", default="auto"),
        Option("security", "auto: privileged, falling back to a restricted set where refused; "
               "rootless: a moby/buildkit:<v>-rootless image as user 1000, no added capability",
               kind="choice", choices=("auto", "privileged", "restricted", "rootless"),
               default="auto"),
        Option("buildkitd-flags", "extra buildkitd flags, e.g. --debug"),
    )

    # -- address and options ---------------------------------------------------------------
    @classmethod
    def normalize_address(cls, address: str) -> str:
        value = strip_scheme(address, cls.name).rstrip("/")
        if not value:
            raise ValidationError(f"builder `{cls.name}` needs a container name")
        if "://" in value:
            raise ValidationError(
                f"builder `{cls.name}` takes a container name, not `{address}`",
                hint="e.g. envd_buildkitd or envd_buildkitd?context=remote",
            )
        name, context = split_address(value)
        return f"{name}?context={context}" if context else name

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        from envd_docker_container import settings

        settings.registries(options)  # every file the registry options name must exist
        settings.parse_flags(options.get("buildkitd-flags"))
        settings.volume_name("envd_buildkitd", options.get("cache-volume"))

    @property
    def given_options(self) -> Mapping[str, str]:
        """The option values stored in the context, as strings."""
        return self.option_values

    @property
    def container(self) -> str:
        """The container's name."""
        return split_address(self.address)[0]

    @property
    def docker_context(self) -> str | None:
        return split_address(self.address)[1]

    def engine(self) -> Engine:
        """The Docker Engine this builder's container lives on."""
        from envd_docker_container.endpoint import resolve
        from envd_docker_container.engine import Engine

        return Engine(resolve(self.docker_context))

    def spec(self) -> DaemonSpec:
        """The container to run, from the options (reads and checks the files they name)."""
        from envd_docker_container.settings import daemon_spec

        return daemon_spec(self.container, self.given_options, default_image=DEFAULT_IMAGE)

    # -- lifecycle (the core calls these: envd bootstrap, auto-bootstrap, envd builder rm) --
    def needs_bootstrap(self) -> bool:
        """True when the container is missing or not running (one inspect; never raises)."""
        from envd_docker_container.lifecycle import state_of

        try:
            engine = self.engine()
            try:
                info = engine.inspect(self.container)
            finally:
                engine.close()
        except Exception:  # noqa: BLE001 - unsure: let the connect that follows explain
            return False
        return info is None or state_of(info) != "running"

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        """Make the container run and answer; see :mod:`envd_docker_container.lifecycle`.

        ``force`` recreates it (a stale one is otherwise only reported). The full outcome is
        kept in :attr:`last_bootstrap`.
        """
        from envd_docker_container.lifecycle import ensure_running

        spec = self.spec()  # before any Docker call: a bad option creates nothing
        engine = self.engine()
        try:
            outcome = ensure_running(engine, self.container, spec, force=force, report=report)
        finally:
            engine.close()
        self.last_bootstrap: Outcome | None = outcome
        action = {"created": DaemonAction.CREATED, "recreated": DaemonAction.RECREATED,
                  "reused": DaemonAction.REUSED}.get(outcome.action, DaemonAction.STARTED)
        detail = f"container {self.container} from {outcome.image} ({outcome.security or '?'})"
        if outcome.stale:
            detail += f"; stale: {'; '.join(outcome.stale)} (bootstrap --force recreates it)"
        return DaemonChange(action, detail)

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        """Stop and remove the container, and its cache volume unless ``keep_state``."""
        from envd_docker_container.lifecycle import remove
        from envd_docker_container.settings import volume_name

        engine = self.engine()
        try:
            removed = remove(engine, self.container,
                             volume_name(self.container, self.given_options.get("cache-volume")),
                             volumes=not keep_state, report=report)
        finally:
            engine.close()
        if not removed:
            return DaemonChange(DaemonAction.ABSENT, f"no container {self.container}")
        return DaemonChange(DaemonAction.REMOVED, ", ".join(removed))

    def connect(self, *, timeout: float) -> Connection:
        """Connect over exec'd ``buildctl dial-stdio``. Starting a missing or stopped
        container is the core's job (auto-bootstrap before a build, ``envd bootstrap``)."""
        from envd_core.buildkit.errors import BuildkitConnectionError
        from envd_docker_container.lifecycle import open_connection, socket_of, state_of

        engine = self.engine()
        info = engine.inspect(self.container)
        if info is None or state_of(info) != "running":
            what = "does not exist" if info is None else f"is {state_of(info)}"
            raise BuildkitConnectionError(
                f"BuildKit container `{self.container}` {what}",
                kind=ErrorKind.NOT_FOUND if info is None else ErrorKind.UNAVAILABLE,
                hint="start it with `envd bootstrap` (a build does it unless --no-bootstrap)",
            )
        return open_connection(engine, self.container, timeout=timeout, socket=socket_of(info))

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """Probe without bootstrapping: a missing or stopped container is reported as such."""
        import time

        import attrs

        from envd_core.buildkit.client import probe
        from envd_core.errors import EnvdError
        from envd_docker_container.lifecycle import open_connection, socket_of, state_of

        started = time.monotonic()
        try:
            engine = self.engine()
            info = engine.inspect(self.container)
            if info is None:
                return BuilderStatus(
                    reachable=False, error_kind=ErrorKind.NOT_FOUND,
                    error=f"container `{self.container}` does not exist (a build or "
                          "`envd bootstrap` creates it)")
            if state_of(info) != "running":
                return BuilderStatus(
                    reachable=False, error_kind=ErrorKind.UNAVAILABLE,
                    error=f"container `{self.container}` is {state_of(info)} "
                          "(a build or `envd bootstrap` starts it)")
            connection = open_connection(engine, self.container, timeout=timeout,
                                         socket=socket_of(info))
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


@hookimpl
def envd_builder_types() -> list[type[Builder]]:
    return [DockerContainerBuilder]
