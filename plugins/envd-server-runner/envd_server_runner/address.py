"""Where the envd-server is and how to reach it: the address, and the TLS settings.

Upstream's client splits the address at ``://`` and sends plain HTTP unless
``ENVD_SERVER_CERT_PATH`` names a directory with ``ca.pem``, ``cert.pem`` and ``key.pem`` (then
TLS, verification skipped when ``ENVD_SERVER_TLS_VERIFY`` is empty). Both variables still work
here. In addition an ``https://`` address means TLS, verified against the system store or the
``cacert`` runner option, with ``cert``/``key`` as the client certificate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from envd_core.errors import ValidationError

if TYPE_CHECKING:
    import ssl

__all__ = ["DEFAULT_ADDRESS", "ServerAddress", "TLSSettings", "parse_address", "tls_settings"]

#: Upstream's default when neither the context nor ``ENVD_SERVER_HOST`` names a server.
DEFAULT_ADDRESS = "http://0.0.0.0:8080"
_SCHEMES = ("http", "https", "tcp")


@attrs.frozen
class ServerAddress:
    """A parsed server address: ``scheme://host:port/prefix``."""

    scheme: str
    host: str
    port: int
    #: Path prefix before ``/api/v1`` (``""`` or ``/prefix``).
    prefix: str = ""

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


@attrs.frozen
class TLSSettings:
    """How to do TLS with the server; ``None`` from :func:`tls_settings` means plain HTTP."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    #: Where the settings came from, for error messages.
    source: str = "https address"

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
