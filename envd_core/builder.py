"""The base class every builder type subclasses.

A *builder type* (``tcp``, ``moby-worker``, ``kube-pod``…) knows how to reach a BuildKit daemon:
it normalises the address the user typed, opens a gRPC connection, and optionally bootstraps,
probes and removes its daemon. Builder types live in plugins and are registered through the
``envd_builder_types`` hook (see :mod:`envd_core.hookspecs`).

Example::

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

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from envd_core.errors import ValidationError
from envd_core.options import Option

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


@attrs.define
class BuilderStatus:
    """What a probe of a builder found; rendered by ``envd context ls --status``/``inspect``."""

    reachable: bool
    version: str | None = None
    platforms: list[str] = attrs.field(factory=list)
    workers: int = 0
    latency_ms: float | None = None
    error: str | None = None
    #: refused, dns, timeout, tls, not-buildkit, unavailable, plugin-missing, error
    error_kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @property
    def summary(self) -> str:
        if self.reachable:
            return f"running {self.version}" if self.version else "running"
        return f"error: {self.error_kind or 'error'}"


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
    #: Exporter types the daemon behind this builder supports.
    exporters: ClassVar[frozenset[str]] = STANDALONE_EXPORTERS
    #: Whether :meth:`bootstrap` starts a daemon (docker-container, kube-pod, rootless).
    can_bootstrap: ClassVar[bool] = False
    #: Whether the daemon supports LLB merge/diff ops (False for dockerd's BuildKit v0.8).
    supports_merge_op: ClassVar[bool] = True
    #: Whether exporters honour ``containerimage.config``; when False the build calls
    #: :meth:`apply_image_config` after exporting (dockerd's graphdriver ``moby`` exporter).
    exporter_applies_config: ClassVar[bool] = True

    def __init__(self, address: str, options: Mapping[str, str] | None = None) -> None:
        self.address = address
        self.options = dict(options or {})

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
        for opt in self.options_declared():
            if opt.name == key:
                raw = self.options.get(key, opt.default)
                return None if raw is None else opt.convert(raw)
        raise KeyError(key)

    @classmethod
    def options_declared(cls) -> tuple[Option, ...]:
        """The builder's own options plus :data:`COMMON_OPTIONS`."""
        own = tuple(cls.options)
        names = {opt.name for opt in own}
        return own + tuple(opt for opt in COMMON_OPTIONS if opt.name not in names)

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        """Check options against each other (each one is already valid on its own).

        Raise ValidationError, e.g. when a client certificate is given without its key.
        """

    # -- connection ------------------------------------------------------------------------
    @abstractmethod
    def connect(self, *, timeout: float) -> Connection:
        """**Required.** Open a gRPC connection to the BuildKit daemon.

        Returns an :class:`envd_core.buildkit.transport.Connection`; the caller closes it.
        Raise :class:`envd_core.errors.BuilderError` with a one-line reason on failure.
        """

    def apply_image_config(self, name: str, config: dict[str, Any]) -> None:
        """Give image ``name`` the OCI ``config`` after export (see exporter_applies_config)."""

    def bootstrap(self) -> None:
        """Start the daemon if this builder type manages one (no-op by default)."""

    def remove(self) -> None:
        """Stop and remove a daemon this builder started (no-op by default)."""

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """Probe the daemon: reachable? version, platforms, workers, latency.

        The default connects with :meth:`connect` and asks the daemon; it never raises.
        """
        from envd_core.buildkit.client import probe
        from envd_core.errors import EnvdError

        started = time.monotonic()
        try:
            connection = self.connect(timeout=timeout)
        except EnvdError as exc:
            kind = getattr(exc, "kind", None) or "error"
            return BuilderStatus(reachable=False, error=exc.message, error_kind=kind)
        try:
            found = probe(connection, timeout=timeout)
        finally:
            connection.close()
        if found.get("latency_ms") is None:
            found["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        return BuilderStatus(**{k: v for k, v in found.items() if k in _STATUS_FIELDS})


_STATUS_FIELDS = {f.name for f in attrs.fields(BuilderStatus)}
