"""Builder types ``tcp`` and ``unix``: a buildkitd you already run, reached directly.

``tcp`` takes ``host:port`` (``tcp://`` optional) and TLS options by file reference, named as
buildx's remote driver names them::

    envd context create --name shared --builder tcp --builder-address buildkit.corp:1234 \\
        --builder-opt cacert=/etc/envd/ca.pem \\
        --builder-opt cert=/etc/envd/client.pem --builder-opt key=/etc/envd/client-key.pem

Any TLS option turns TLS on; ``cert`` and ``key`` (mutual TLS) go together. Plain TCP to a host
that is not loopback works but warns: anyone on the path can use the daemon. The warning comes
with ``context create``/``update`` and once per process when a command uses the daemon (build,
up, prune…), not from a status probe (``context ls --status``, ``inspect``): a listing would
repeat it for every such context on every run.

Several daemons may be listed, comma-separated (``a:1234,b:1234``): each build uses the first
that answers, in order, and says so when it skips one. The TLS options apply to all of them.

``unix`` takes the path of buildkitd's socket (``unix://`` optional).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from envd_core import hookimpl
from envd_core.builder import Builder, BuilderStatus, strip_scheme
from envd_core.errors import ValidationError
from envd_core.options import Option

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection

__all__ = ["TcpBuilder", "UnixBuilder", "split_host_port"]

_TLS_OPTIONS = ("cacert", "cert", "key", "servername")
_warned: set[str] = set()
_warn_lock = threading.Lock()


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValidationError otherwise."""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValidationError(f"invalid address `{address}`: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValidationError(
                f"invalid address `{address}`: expected host:port, e.g. 127.0.0.1:1234"
            )
        if ":" in host:
            raise ValidationError(f"invalid address `{address}`: write IPv6 hosts as [addr]:port")
    if not host:
        raise ValidationError(f"invalid address `{address}`: the host is missing")
    # isascii: str.isdigit() and int() accept any Unicode digit (`١٢٣` would be port 123)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValidationError(f"invalid address `{address}`: port must be 1-65535")
    if any(ch in host for ch in "/?#@ \t[]") or not host.isascii() or not host.isprintable():
        raise ValidationError(f"invalid address `{address}`: bad host name `{host}`")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TcpBuilder(Builder):
    """A buildkitd listening on TCP, plain or with (mutual) TLS."""

    name = "tcp"
    summary = "buildkitd over TCP (plain, TLS or mutual TLS)"
    address_help = "host:port"
    options = (
        Option("cacert", "CA certificate that signed the daemon's certificate", kind="path"),
        Option("cert", "client certificate for mutual TLS", kind="path"),
        Option("key", "client private key for mutual TLS", kind="path"),
        Option("servername", "server name to verify in the daemon's certificate"),
    )
    #: True while :meth:`status` probes: the plain-TCP warning is for uses of the daemon.
    _probing = False

    @classmethod
    def normalize_address(cls, address: str) -> str:
        entries = address.split(",")
        parts = []
        for entry in entries:
            if len(entries) > 1 and not strip_scheme(entry, cls.name):
                raise ValidationError(f"empty entry in the address list `{address}`")
            # Each entry passes the base checks (scheme, whitespace) on its own.
            host, port = split_host_port(super().normalize_address(entry).rstrip("/"))
            parts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if len(set(parts)) != len(parts):
            raise ValidationError(f"the address list `{address}` names a daemon twice")
        return ",".join(parts)

    @property
    def addresses(self) -> list[str]:
        """The daemons of this context, in the order they are tried."""
        return self.address.split(",")

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        if ("cert" in options) != ("key" in options):
            raise ValidationError(
                "tls enabled, but missing keys: give both `cert` and `key` for mutual TLS"
            )

    @property
    def tls_enabled(self) -> bool:
        """Whether any TLS option is set (each one turns TLS on)."""
        return any(self._text_option(k) is not None for k in _TLS_OPTIONS)

    def _text_option(self, key: str) -> str | None:
        # Through Builder.option, the declared accessor: the options all convert to str.
        value = self.option(key)
        return None if value is None else str(value)

    def connect(self, *, timeout: float) -> Connection:
        """The first daemon of :attr:`addresses` that answers; each gets an equal share of
        ``timeout`` (at least 2 s) so a dead first one cannot eat the whole wait."""
        from envd_core.errors import BuilderError

        addresses = self.addresses
        if len(addresses) == 1:
            return self._connect_one(addresses[0], timeout)
        share = max(timeout / len(addresses), 2.0)
        skipped: list[str] = []
        for i, address in enumerate(addresses):
            try:
                conn = self._connect_one(address, share)
            except BuilderError as exc:
                if i == len(addresses) - 1:
                    raise BuilderError(
                        f"none of the {len(addresses)} daemons of {self.url} answers: "
                        + "; ".join([*skipped, f"{address}: {exc.message}"]),
                        kind=exc.kind, hint=exc.hint) from None
                skipped.append(f"{address}: {exc.message}")
                continue
            if skipped:
                sys.stderr.write(f"envd: notice: building on tcp://{address}; skipped "
                                 + "; ".join(skipped) + "\n")
            return conn
        raise AssertionError("unreachable: the loop returns or raises")

    def warnings(self) -> list[str]:
        """Plain TCP to a host that is not loopback, one line per such address."""
        if self.tls_enabled:
            return []
        return [_plain_tcp_warning(address) for address in self.addresses
                if not _is_loopback(split_host_port(address)[0])]

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """The base probe, without the plain-TCP warning: probing is not using the daemon."""
        self._probing = True
        try:
            return super().status(timeout=timeout)
        finally:
            self._probing = False

    def _connect_one(self, address: str, timeout: float) -> Connection:
        from envd_core.buildkit.transport import TLSConfig, connect_tcp

        host, port = split_host_port(address)
        tls = None
        if self.tls_enabled:
            tls = TLSConfig(
                ca=self._text_option("cacert"),
                cert=self._text_option("cert"),
                key=self._text_option("key"),
                server_name=self._text_option("servername"),
            )
        elif not self._probing and not _is_loopback(host):
            with _warn_lock:
                if address not in _warned:
                    _warned.add(address)
                    sys.stderr.write(f"envd: warning: {_plain_tcp_warning(address)}\n")
        return connect_tcp(host, port, tls=tls, timeout=timeout)


def _plain_tcp_warning(address: str) -> str:
    return (f"tcp://{address} is plain TCP without TLS: anyone who can reach it can use the "
            "daemon (set --builder-opt cacert/cert/key)")


class UnixBuilder(Builder):
    """A buildkitd listening on a unix socket on this machine."""

    name = "unix"
    summary = "buildkitd on a local unix socket"
    address_help = "socket path, e.g. /run/buildkit/buildkitd.sock"
    default_address = None

    @classmethod
    def normalize_address(cls, address: str) -> str:
        value = strip_scheme(address, cls.name)
        if not value:
            raise ValidationError("builder `unix` needs a socket path")
        if "://" in value or "\x00" in value:
            raise ValidationError(f"builder `unix` takes a socket path, not `{address}`")
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            raise ValidationError(f"builder `unix` needs an absolute socket path, got `{address}`")
        return os.path.normpath(value)

    def connect(self, *, timeout: float) -> Connection:
        from envd_core.buildkit.transport import connect_unix

        return connect_unix(self.address, timeout=timeout)


@hookimpl
def envd_builder_types() -> list[type[Builder]]:
    return [TcpBuilder, UnixBuilder]
