"""The base class every builder type subclasses, and what its methods return.

A *builder type* (``tcp``, ``moby-worker``, ``docker-container``…) knows how to reach a BuildKit
daemon: it normalises the address the user typed and opens a gRPC connection. It declares what
the daemon can do with class attributes (:attr:`Builder.exporters`, :attr:`Builder.can_push`,
:attr:`Builder.supports_merge_op`, :attr:`Builder.exporter_applies_config`,
:attr:`Builder.can_bootstrap`), which the core reads directly: a capability is never probed with
``getattr``. A type that manages its own daemon also bootstraps, checks and removes it.

Who calls what:

- ``connect``: every build, ``envd bootstrap``, and the default ``status``;
- ``status``: ``envd context ls --status``, ``envd context inspect`` and ``envd bootstrap``;
- ``needs_bootstrap`` and ``bootstrap``: the build path before its first solve (auto-bootstrap)
  and ``envd bootstrap``; only when ``can_bootstrap`` is true;
- ``remove``: ``envd builder rm``; only when ``can_bootstrap`` is true;
- ``push``: a build with ``--output type=image,…,push=true`` on a builder that exports into a
  local image store (``moby``), only when ``can_push`` is true;
- ``apply_image_config``: after such an export, only when ``exporter_applies_config`` is false.

Builder types live in plugins and are registered through the ``envd_builder_types`` hook (see
:mod:`envd_core.hookspecs`). Example::

    from envd_core.builder import Builder
    from envd_core import hookimpl

    class MyBuilder(Builder):
        name = "my-cloud"
        summary = "BuildKit on My Cloud"
        address_help = "cluster name"

        def connect(self, *, timeout):
            from envd_core.buildkit.transport import connect_tcp
            return connect_tcp(self.address, 443, timeout=timeout)

    @hookimpl
    def envd_builder_types():
        return [MyBuilder]
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from envd_core.errors import BuilderError, EnvdError, ErrorKind, ValidationError
from envd_core.options import Option, option_value

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection

#: Options every builder type accepts, on top of its own.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option(
        "ca-bundle",
        "extra CA bundle mounted (never baked in) into build steps that reach the network, for "
        "TLS-intercepting proxies",
        kind="path",
    ),
)

#: Exporters a standalone buildkitd offers.
STANDALONE_EXPORTERS = frozenset({"image", "oci", "docker", "tar", "local"})


#: Receives one human-readable progress line at a time (``"pulling moby/buildkit: 40%"``).
#: The CLI prints each to stderr; library callers may collect them or pass :func:`silent`.
Report = Callable[[str], None]


def silent(line: str) -> None:
    """A :data:`Report` that drops every line (the default of bootstrap and remove)."""


def _kind(value: ErrorKind | str | None) -> ErrorKind | None:
    return ErrorKind.parse(value)


@attrs.define
class BuilderStatus:
    """What a probe of a builder found; rendered by ``envd context ls --status``/``inspect``.

    ``reachable`` is true when the daemon answered ``ListWorkers``; then ``version`` (BuildKit's
    or, if it has no Info RPC, whatever identifies the daemon), ``platforms``, ``workers`` and
    ``latency_ms`` describe it. Otherwise ``error`` is one line and ``error_kind`` says why
    (``refused``, ``dns``, ``timeout``, ``tls``, ``not-buildkit``, ``unavailable``,
    ``plugin-missing``, or ``error`` for anything unexpected). A string kind is converted.
    """

    reachable: bool
    version: str | None = None
    platforms: list[str] = attrs.field(factory=list)
    workers: int = 0
    latency_ms: float | None = None
    error: str | None = None
    error_kind: ErrorKind | None = attrs.field(default=None, converter=_kind)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (the kind as its string)."""
        data = attrs.asdict(self)
        data["error_kind"] = self.error_kind.value if self.error_kind is not None else None
        return data

    @property
    def summary(self) -> str:
        if self.reachable:
            return f"running {self.version}" if self.version else "running"
        return f"error: {self.error_kind or 'error'}"


class DaemonAction(str, enum.Enum):
    """What :meth:`Builder.bootstrap` or :meth:`Builder.remove` did to the daemon."""

    #: bootstrap: a new daemon was created and started.
    CREATED = "created"
    #: bootstrap: an existing daemon that was stopped or paused was started again.
    STARTED = "started"
    #: bootstrap: a stale or dead daemon was replaced by a new one (with ``force`` if stale).
    RECREATED = "recreated"
    #: bootstrap: the daemon was already running; nothing changed.
    REUSED = "reused"
    #: remove: the daemon was stopped and removed (its state too, unless ``keep_state``).
    REMOVED = "removed"
    #: remove: there was no daemon to remove.
    ABSENT = "absent"
    #: this builder type manages no daemon (``can_bootstrap`` is false): nothing was done.
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@attrs.define
class DaemonChange:
    """The result of :meth:`Builder.bootstrap` or :meth:`Builder.remove`.

    ``detail`` is one line for the user saying what and where, e.g. ``container envd_buildkitd
    from moby/buildkit:v0.18.2 (privileged)``; ``envd bootstrap --format json`` shows both.
    """

    action: DaemonAction
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """``{"action": …, "detail": …}`` with plain strings."""
        return {"action": self.action.value, "detail": self.detail}


def strip_scheme(address: str, scheme: str) -> str:
    """Drop one leading ``<scheme>://`` so both stored forms are accepted.

    Upstream envd stores addresses without a scheme and prints ``<type>://<address>``; users type
    either. Removing exactly the builder's own scheme means ``tcp://tcp://h:1`` is never produced.
    """
    address = address.strip()
    prefix = f"{scheme}://"
    if address.lower().startswith(prefix):
        address = address[len(prefix):]
    return address


class Builder(ABC):
    """Base class of builder types.

    Subclasses set :attr:`name` and implement :meth:`connect`. Everything else has a safe
    default, so a plugin written today keeps working when the core adds optional capabilities.
    A capability flag set to true promises the matching method is overridden
    (:class:`envd_core.testing.BuilderContract` checks it): ``can_push`` → :meth:`push`,
    ``can_bootstrap`` → :meth:`needs_bootstrap`, :meth:`bootstrap` and :meth:`remove`,
    ``exporter_applies_config = False`` → :meth:`apply_image_config`.
    """

    #: **Required.** The type name users pass to ``--builder`` (``tcp``, ``moby-worker``…).
    name: ClassVar[str]
    #: One line for ``envd plugins ls`` and error messages.
    summary: ClassVar[str] = ""
    #: What an address looks like, for help and error messages (``host:port``).
    address_help: ClassVar[str] = "address"
    #: Address used when ``--builder-address`` is not given; ``None`` makes it required.
    default_address: ClassVar[str | None] = None
    #: Options accepted with ``--builder-opt key=value``.
    options: ClassVar[tuple[Option, ...]] = ()
    #: Modules this builder imports lazily (inside its methods) that envd's resident process
    #: (docs/resident.md) should import once up front, e.g. ``("kubernetes.client",)``.
    #: Importing them must not start threads, open connections or read per-user state.
    preload: ClassVar[tuple[str, ...]] = ()

    # -- capabilities: read by the core, never probed --------------------------------------
    #: Exporter types the daemon behind this builder supports (``--output type=…``). With
    #: ``moby`` and no ``image``, ``type=image`` exports into the daemon's image store and
    #: pushes with :meth:`push` afterwards.
    exporters: ClassVar[frozenset[str]] = STANDALONE_EXPORTERS
    #: Whether :meth:`push` can push an image from the daemon's own image store.
    can_push: ClassVar[bool] = False
    #: Whether the daemon supports LLB merge/diff ops (False for dockerd's BuildKit v0.8).
    supports_merge_op: ClassVar[bool] = True
    #: Whether exporters honour ``containerimage.config``; when False the build calls
    #: :meth:`apply_image_config` after exporting (dockerd's graphdriver ``moby`` exporter).
    exporter_applies_config: ClassVar[bool] = True
    #: Whether this type starts and removes its own daemon (docker-container, rootless,
    #: kube-pod): then :meth:`needs_bootstrap`, :meth:`bootstrap` and :meth:`remove` are real.
    can_bootstrap: ClassVar[bool] = False
    #: With ``can_bootstrap``: whether :meth:`needs_bootstrap` and :meth:`connect` may run in
    #: the early-connect thread while build.envd is evaluated (a second ``needs_bootstrap``
    #: from the build path must then answer the same, without redoing the work).
    early_bootstrap_check: ClassVar[bool] = False

    #: The project being built (its context directory), set by the build path before
    #: :meth:`connect`; ``None`` outside a build. A type spreading builds over several daemons
    #: routes by it (kube-pod keeps each project on one pod, so its cache hits).
    project: str | None = None

    def __init__(self, address: str, options: Mapping[str, str] | None = None) -> None:
        self.address = address
        #: The values given with `--builder-opt` (strings, as stored); read one with :meth:`option`.
        self.option_values: dict[str, str] = dict(options or {})

    # -- addresses -------------------------------------------------------------------------
    @classmethod
    def normalize_address(cls, address: str) -> str:
        """Return the address to store (no scheme); raise ValidationError if it is unusable.

        The default accepts the address with or without ``<name>://`` and refuses an empty one
        or one with a different scheme. Override to check the form (``host:port``, a path…).
        """
        value = strip_scheme(address, cls.name)
        if not value:
            raise ValidationError(f"builder `{cls.name}` needs an address ({cls.address_help})")
        if "://" in value:
            scheme = value.split("://", 1)[0]
            raise ValidationError(
                f"builder `{cls.name}` does not take `{scheme}://` addresses: `{address}`",
                hint=f"give {cls.address_help}, optionally prefixed with {cls.name}://",
            )
        if any(ch.isspace() for ch in value):
            raise ValidationError(f"builder address must not contain whitespace: `{address}`")
        return value

    @property
    def url(self) -> str:
        """``<type>://<address>``, as upstream envd prints it."""
        return f"{self.name}://{self.address}"

    def option(self, key: str) -> Any:
        """The converted value of option ``key`` (its declared default when unset)."""
        return option_value(self.options_declared(), self.option_values, key)

    @classmethod
    def options_declared(cls) -> tuple[Option, ...]:
        """The builder's own options plus :data:`COMMON_OPTIONS`."""
        own = tuple(cls.options)
        names = {opt.name for opt in own}
        return own + tuple(opt for opt in COMMON_OPTIONS if opt.name not in names)

    @classmethod  # noqa: B027 - an optional check: the default accepts every combination
    def check_options(cls, options: Mapping[str, str]) -> None:
        """Check options against each other (each one is already valid on its own).

        Raise ValidationError, e.g. when a client certificate is given without its key.
        """

    def warnings(self) -> list[str]:
        """Risks of this configuration that do not stop it from working, one line each,
        without the ``warning:`` prefix (``tcp``: plain TCP to another host).

        ``envd context create``/``update`` print them; the builder itself says them again when a
        command uses the daemon (in :meth:`connect`), but not when :meth:`status` probes it:
        ``context ls --status`` would repeat them for every context on every run. No I/O here.
        The default: none.
        """
        return []

    # -- connection ------------------------------------------------------------------------
    @abstractmethod
    def connect(self, *, timeout: float) -> Connection:
        """**Required.** Open a gRPC connection to the BuildKit daemon.

        Wait up to ``timeout`` seconds (``BUILDKIT_CONNECTING_TIMEOUT``) for the daemon to
        answer ``ListWorkers``; the ``envd_core.buildkit.transport`` constructors do. Returns
        an :class:`envd_core.buildkit.transport.Connection`; the caller closes it. On failure
        raise :class:`envd_core.errors.BuilderError` (or ``BuildkitConnectionError``) with a
        one-line reason and the :class:`~envd_core.errors.ErrorKind` that fits.
        """

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """Probe the daemon: reachable? version, platforms, workers, latency.

        **Never raises**: every failure becomes ``BuilderStatus(reachable=False, error=…,
        error_kind=…)``, so one broken context cannot break a listing. The default connects
        with :meth:`connect` and asks the daemon (``ListWorkers``, ``Info``). Override to add
        what the daemon cannot say itself (moby-worker adds dockerd's version), or to report a
        daemon you manage that is stopped without trying to connect.
        """
        started = time.monotonic()
        try:
            from envd_core.buildkit.client import probe

            connection = self.connect(timeout=timeout)
        except EnvdError as exc:
            return BuilderStatus(reachable=False, error=exc.message, error_kind=exc.kind)
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not break a listing
            return BuilderStatus(reachable=False, error=f"{type(exc).__name__}: {exc}",
                                 error_kind=ErrorKind.ERROR)
        try:
            found = probe(connection, timeout=timeout)
        finally:
            connection.close()
        if found.get("latency_ms") is None:
            found["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        return BuilderStatus(**{k: v for k, v in found.items() if k in _STATUS_FIELDS})

    # -- images the daemon keeps itself (dockerd) ------------------------------------------
    def push(self, name: str) -> str | None:
        """Push image ``name`` from the daemon's own image store; return its digest if known.

        Called after a ``moby`` export when the user asked for ``push=true``, only if
        :attr:`can_push` is true. Use the user's registry credentials (the docker config).
        The default raises: a builder without ``can_push`` cannot push.
        """
        raise BuilderError(f"builder `{self.name}` cannot push images (`{name}`)",
                           kind=ErrorKind.UNSUPPORTED)

    def apply_image_config(self, name: str, config: dict[str, Any]) -> None:
        """Give image ``name`` the OCI image ``config`` after export.

        Called after a ``moby`` export only when :attr:`exporter_applies_config` is false (the
        exporter ignored ``containerimage.config``). The default raises: a builder whose
        exporters apply the config is never asked.
        """
        raise BuilderError(f"builder `{self.name}` cannot change the config of `{name}`",
                           kind=ErrorKind.UNSUPPORTED)

    # -- a daemon this builder type manages (only when can_bootstrap) ----------------------
    def needs_bootstrap(self) -> bool:
        """Whether the daemon is missing or stopped, so :meth:`bootstrap` would start it.

        Asked by the build path before its first solve; if true, the build bootstraps
        automatically (and says so). Keep it cheap (inspect a container, look for a socket or
        a pid file; no gRPC) and never raise: answer false when unsure, the connect that follows
        reports the problem. The default is false.
        """
        return False

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        """Start the daemon if it is not running; reuse it if it is.

        Idempotent: a second call finds the daemon and returns ``REUSED``. A daemon whose image
        or config no longer matches the context is recreated only with ``force``; without it,
        report that it is stale and reuse it. Send progress (pulling, creating, starting,
        which security options were used) as one-line messages to ``report``. Return what was
        done as a :class:`DaemonChange`. Readiness is the caller's job: it connects afterwards
        with ``BUILDKIT_CONNECTING_TIMEOUT``, so return once the daemon process runs. Raise
        :class:`~envd_core.errors.BuilderError` with one line on failure, leaving nothing
        half-created. The default (``can_bootstrap`` false) does nothing and returns ``NONE``.
        """
        return DaemonChange(
            DaemonAction.NONE, f"builder type `{self.name}` does not start a daemon"
        )

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        """Stop and remove the daemon this builder started (``envd builder rm``).

        With ``keep_state``, keep what outlives the daemon (its cache volume or state
        directory) so the next bootstrap reuses the cache, as ``docker buildx rm --keep-state``
        does. Return ``REMOVED``, or ``ABSENT`` if there was nothing to remove; progress goes to
        ``report``. Never touch anything this builder did not create. The default
        (``can_bootstrap`` false) does nothing and returns ``NONE``.
        """
        return DaemonChange(
            DaemonAction.NONE, f"builder type `{self.name}` does not start a daemon"
        )


_STATUS_FIELDS = {f.name for f in attrs.fields(BuilderStatus)}
