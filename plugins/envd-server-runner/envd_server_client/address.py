"""Where the envd-server is and how to reach it: the address, and the TLS settings.

Upstream's client splits the address at ``://`` and sends plain HTTP unless
``ENVD_SERVER_CERT_PATH`` names a directory with ``ca.pem``, ``cert.pem`` and ``key.pem`` (then
TLS, verification skipped when ``ENVD_SERVER_TLS_VERIFY`` is empty). Both variables still work
here. In addition an ``https://`` address means TLS, verified against the system store or the
``cacert`` runner option, with ``cert``/``key`` as the client certificate.
"""

from __future__ import annotations

import os

from envd_core.errors import ValidationError

TYPE_CHECKING = False  # on the fast path of `envd envs ls`: no typing, no attrs
if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

__all__ = ["DEFAULT_ADDRESS", "ServerAddress", "TLSSettings", "parse_address", "tls_settings"]

#: Upstream's default when neither the context nor ``ENVD_SERVER_HOST`` names a server.
DEFAULT_ADDRESS = "http://0.0.0.0:8080"
_SCHEMES = ("http", "https", "tcp")


class _Frozen:
    """A frozen record with keyword construction, ``==``, ``hash`` and ``repr`` (what
    ``attrs.frozen`` gave; attrs is not imported on the fast path of ``envd envs ls``)."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set `{name}`")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class ServerAddress(_Frozen):
    """A parsed server address: ``scheme://host:port/prefix``."""

    __slots__ = ("host", "port", "prefix", "scheme")

    scheme: str
    host: str
    port: int
    #: Path prefix before ``/api/v1`` (``""`` or ``/prefix``).
    prefix: str

    def __init__(self, scheme: str, host: str, port: int, prefix: str = "") -> None:
        put = object.__setattr__
        put(self, "scheme", scheme)
        put(self, "host", host)
        put(self, "port", port)
        put(self, "prefix", prefix)

    @property
    def display(self) -> str:
        """The address as users typed it (for messages)."""
        return f"{self.scheme}://{self.hostport}{self.prefix}"

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(address: str | None) -> ServerAddress:
    """Parse ``http(s)://host:port[/path]`` (empty: ``ENVD_SERVER_HOST``, else upstream's default).

    A bare ``host:port`` means ``http://`` as upstream's default does; ``tcp://`` is accepted
    for upstream compatibility and means plain HTTP.
    """
    from urllib.parse import urlsplit

    raw = (address or "").strip() or os.environ.get("ENVD_SERVER_HOST", "").strip()
    raw = raw or DEFAULT_ADDRESS
    raw = raw.removeprefix("envd-server://")
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in _SCHEMES:
        raise ValidationError(
            f"runner `envd-server` address must be http(s)://host:port[/path], got `{raw}`"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValidationError(f"invalid port in envd-server address `{raw}`") from None
    if not parts.hostname:
        raise ValidationError(f"envd-server address `{raw}` names no host")
    if parts.query or parts.fragment or parts.username:
        raise ValidationError(
            f"envd-server address `{raw}` must not carry a query, fragment or user name"
        )
    default_port = 443 if parts.scheme == "https" else 80
    return ServerAddress(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or default_port,
        prefix=parts.path.rstrip("/"),
    )


class TLSSettings(_Frozen):
    """How to do TLS with the server; ``None`` from :func:`tls_settings` means plain HTTP."""

    __slots__ = ("cacert", "cert", "key", "source", "verify")

    cacert: str | None
    cert: str | None
    key: str | None
    verify: bool
    #: Where the settings came from, for error messages.
    source: str

    def __init__(self, cacert: str | None = None, cert: str | None = None,
                 key: str | None = None, verify: bool = True,
                 source: str = "https address") -> None:
        put = object.__setattr__
        put(self, "cacert", cacert)
        put(self, "cert", cert)
        put(self, "key", key)
        put(self, "verify", verify)
        put(self, "source", source)

    def context(self) -> ssl.SSLContext:
        """An :class:`ssl.SSLContext` with these settings (system store unless ``cacert``)."""
        import ssl

        ctx = ssl.create_default_context(cafile=self.cacert)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise ValidationError(
                    f"cannot load the client certificate `{self.cert}` with key `{self.key}`: "
                    f"{getattr(exc, 'strerror', None) or exc}"
                ) from None
        return ctx


def tls_settings(address: ServerAddress, options: Mapping[str, str]) -> TLSSettings | None:
    """The TLS settings for ``address``: runner options first, then upstream's variables."""
    cert_path = os.environ.get("ENVD_SERVER_CERT_PATH", "").strip()
    if address.scheme == "https" or options.get("cacert") or options.get("cert"):
        cert, key = options.get("cert"), options.get("key")
        if bool(cert) != bool(key):
            raise ValidationError(
                "runner options `cert` and `key` go together: give both or neither"
            )
        if cert_path and not options.get("cacert") and not cert:
            return _from_cert_path(cert_path)
        return TLSSettings(cacert=options.get("cacert") or None, cert=cert, key=key,
                           source="runner options" if options else "https address")
    if cert_path:
        return _from_cert_path(cert_path)
    return None


def _from_cert_path(directory: str) -> TLSSettings:
    files = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        raise ValidationError(
            f"ENVD_SERVER_CERT_PATH=`{directory}` lacks {', '.join(missing)}",
            hint="it must hold ca.pem, cert.pem and key.pem, as upstream envd expects",
        )
    return TLSSettings(
        cacert=files["ca"], cert=files["cert"], key=files["key"],
        # upstream: an empty ENVD_SERVER_TLS_VERIFY skips verification
        verify=bool(os.environ.get("ENVD_SERVER_TLS_VERIFY", "")),
        source="ENVD_SERVER_CERT_PATH",
    )
