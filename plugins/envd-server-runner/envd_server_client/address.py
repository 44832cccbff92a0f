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
    raw = (address or "").strip() or os.environ.get("ENVD_SERVER_HOST", "").strip()
    raw = raw or DEFAULT_ADDRESS
    raw = raw.removeprefix("envd-server://")
    if "://" not in raw:
        raw = f"http://{raw}"
    try:
        scheme, netloc, path, query, fragment = _urlsplit(raw)
    except ValueError:  # brackets that do not pair
        raise ValidationError(f"invalid host in envd-server address `{raw}`") from None
    if scheme not in _SCHEMES:
        raise ValidationError(
            f"runner `envd-server` address must be http(s)://host:port[/path], got `{raw}`"
        )
    userinfo, at, hostinfo = netloc.rpartition("@")
    hostname, port_text = _hostinfo(hostinfo)
    try:
        port = _port(port_text)
    except ValueError:
        raise ValidationError(f"invalid port in envd-server address `{raw}`") from None
    if not hostname:
        raise ValidationError(f"envd-server address `{raw}` names no host")
    if query or fragment or (at and userinfo.partition(":")[0]):
        raise ValidationError(
            f"envd-server address `{raw}` must not carry a query, fragment or user name"
        )
    default_port = 443 if scheme == "https" else 80
    return ServerAddress(scheme=scheme, host=hostname, port=port or default_port,
                         prefix=path.rstrip("/"))


# What follows splits an address as urllib.parse.urlsplit does (its scheme, netloc, path,
# query and fragment; the `hostname` and `port` of its result). Importing urllib.parse costs
# ~8 ms of CPU here (it builds its named tuples with exec, and imports ipaddress): a fifth of
# a cold `envd envs ls`. A unit test compares the two on a table of addresses.
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def _urlsplit(url: str) -> tuple[str, str, str, str, str]:
    url = url.lstrip("".join(map(chr, range(33))))
    for unsafe in "\t\r\n":
        url = url.replace(unsafe, "")
    scheme = netloc = query = fragment = ""
    i = url.find(":")
    if i > 0 and url[0].isascii() and url[0].isalpha() and _SCHEME_CHARS.issuperset(url[:i]):
        scheme, url = url[:i].lower(), url[i + 1:]
    if url[:2] == "//":
        end = min((p for p in (url.find(c, 2) for c in "/?#") if p >= 0), default=len(url))
        netloc, url = url[2:end], url[end:]
        if ("[" in netloc) != ("]" in netloc):
            raise ValueError("Invalid IPv6 URL")
    if "#" in url:
        url, fragment = url.split("#", 1)
    if "?" in url:
        url, query = url.split("?", 1)
    return scheme, netloc, url, query, fragment


def _hostinfo(hostinfo: str) -> tuple[str | None, str | None]:
    """``(hostname, port text)`` as ``SplitResult.hostname`` and ``._hostinfo`` give them."""
    _, bracket, bracketed = hostinfo.partition("[")
    if bracket:
        hostname, _, rest = bracketed.partition("]")
        port = rest.partition(":")[2]
    else:
        hostname, _, port = hostinfo.partition(":")
    if not hostname:
        return None, port or None
    name, percent, zone = hostname.partition("%")
    return name.lower() + percent + zone, port or None


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isdigit() and text.isascii()):
        raise ValueError(f"Port could not be cast to integer value as {text!r}")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("Port out of range 0-65535")
    return port


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str) -> str:
    """``urllib.parse.quote(text, safe="")``: every byte but ``A-Za-z0-9_.-~`` as ``%XX``."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode("utf-8"))


def unquote(text: str) -> str:
    """``urllib.parse.unquote(text)``: ``%XX`` sequences decoded as UTF-8 (``replace``)."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and _is_hex(text[i + 1:i + 3]):
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out += text[i].encode("utf-8")
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


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
