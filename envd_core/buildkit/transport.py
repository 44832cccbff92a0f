"""How bytes reach buildkitd: unix sockets, TCP (+TLS/mTLS) and byte bridges.

A *bridge* (``bridge.py``) is for endpoints grpcio cannot dial itself: any byte stream a plugin
dials (dockerd's ``POST /grpc`` h2c upgrade, ``buildctl dial-stdio`` run inside a container) or a
local command's stdin/stdout. ``connect_bridge`` points a grpc channel at the bridge's private
unix socket; ``Connection.close()`` tears all of it down.
Every constructor waits until ``ListWorkers`` answers (or the connect timeout expires) and
raises a one-line ``BuildkitConnectionError`` with a failure *kind* otherwise.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envd_core.buildkit.bridge import (  # re-exported: callers import them from here
    ByteStream,
    _Bridge,
    dial_process,
)
from envd_core.buildkit.errors import BuildkitConnectionError, connection_error
from envd_core.errors import BuilderError, ErrorKind, ValidationError

if TYPE_CHECKING:
    import grpc

MAX_MESSAGE = 16 << 20  # buildkitd's limit in each direction
DEFAULT_TIMEOUT = 5.0
TIMEOUT_ENV = "BUILDKIT_CONNECTING_TIMEOUT"

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Never route a daemon connection through $http_proxy.
    ("grpc.enable_http_proxy", 0),
    # Retry a daemon that is still starting quickly instead of grpc's 1 s+ backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def load_grpc() -> Any:
    """Import grpc with its C-core logging quiet unless the user asked for it: handshake
    failures would otherwise print several ``E...`` lines besides our one-line error."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    return grpc


def parse_go_duration(text: str) -> float:
    """Parse a Go duration (``5s``, ``500ms``, ``1m30s``, ``0``) into seconds.

    Raises ``ValidationError`` naming the value when it is not a Go duration.
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValidationError(
            f"invalid duration `{text}`: use a Go duration such as `5s`, `500ms` or `1m`"
        )
    return sign * total


def connect_timeout(timeout: float | None = None) -> float:
    """The connect timeout: ``timeout`` if given, else ``$BUILDKIT_CONNECTING_TIMEOUT``, else 5s."""
    if timeout is not None:
        return timeout
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT
    try:
        value = parse_go_duration(raw)
    except ValidationError:
        raise ValidationError(
            f"invalid {TIMEOUT_ENV} `{raw}`: use a Go duration such as `5s`, `500ms` or `1m`"
        ) from None
    if value <= 0:
        raise ValidationError(f"invalid {TIMEOUT_ENV} `{raw}`: it must be positive, e.g. `5s`")
    return value


@dataclass(frozen=True)
class TLSConfig:
    """TLS material for a TCP daemon; ``ca`` alone = server-auth TLS, plus cert/key = mTLS."""

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files and build grpc channel credentials (clear error if one is missing)."""
        import grpc

        if (self.cert is None) != (self.key is None):
            raise ValidationError(
                "TLS client certificate and key go together: give both `cert` and `key` or neither"
            )

        def read(p: str | os.PathLike[str] | None, what: str) -> bytes | None:
            if p is None:
                return None
            try:
                with open(p, "rb") as f:
                    return f.read()
            except OSError as e:
                raise ValidationError(
                    f"cannot read TLS {what} `{os.fspath(p)}`: {e.strerror}; fix the path"
                ) from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "CA"),
            private_key=read(self.key, "key"),
            certificate_chain=read(self.cert, "certificate"),
        )


@dataclass
class Connection:
    """An open gRPC channel to a BuildKit daemon plus whatever keeps it alive (bridges).

    ``close()`` is idempotent and also runs on ``with`` exit.
    """

    channel: grpc.Channel
    target: str
    tls: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Close the channel, stop bridge threads/processes and remove temp sockets."""
        if self._closed:
            return
        self._closed = True
        try:
            self.channel.close()
        finally:
            for closer in reversed(self._closers):
                closer()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_ready(conn: Connection, timeout: float) -> None:
    """Block until ListWorkers answers, or raise the classified error once ``timeout`` expires."""
    import grpc

    from envd_core.buildkit._pb import control_pb2

    call = conn.channel.unary_unary(
        "/moby.buildkit.v1.Control/ListWorkers",
        request_serializer=control_pb2.ListWorkersRequest.SerializeToString,
        response_deserializer=control_pb2.ListWorkersResponse.FromString,
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    last: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            call(control_pb2.ListWorkersRequest(), timeout=remaining)
            return
        except grpc.RpcError as e:
            last = e
            code = e.code()
            # Only "not up yet" is worth retrying; a TLS or protocol mismatch will not heal.
            if code != grpc.StatusCode.UNAVAILABLE:
                break
            err = connection_error(e, target=conn.target, tls=conn.tls)
            if (
                # A refusal (ECONNREFUSED, or ENOENT for a socket) is immediate and final:
                # failing fast beats retrying it until the timeout (5.7 s before issue 15).
                err.kind in (ErrorKind.TLS, ErrorKind.NOT_BUILDKIT, ErrorKind.DNS,
                             ErrorKind.REFUSED)
                or "socket closed" in (e.details() or "").lower()
            ):
                break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
    if last is None:
        last = TimeoutError("timed out")
    raise connection_error(last, target=conn.target, tls=conn.tls)


def _open(
    channel: grpc.Channel,
    target: str,
    *,
    tls: bool,
    timeout: float | None,
    closers: list[Callable[[], None]] | None = None,
    wait: bool = True,
) -> Connection:
    conn = Connection(channel=channel, target=target, tls=tls, _closers=list(closers or []))
    if wait:
        try:
            wait_ready(conn, connect_timeout(timeout))
        except BaseException:
            conn.close()
            raise
    return conn


def connect_unix(
    path: str | os.PathLike[str], *, timeout: float | None = None, wait: bool = True,
    target: str | None = None, far: bool = False,
) -> Connection:
    """Connect to buildkitd's unix socket and wait until it answers.

    ``far``: the socket is a bridge to a daemon further away (a plugin's helper process
    splices it to a pod): grpc's 100 ms connect timeout is lifted, as in
    :func:`connect_bridge`. ``target`` names the daemon in messages (default the socket).
    """
    grpc = load_grpc()

    p = os.fspath(path)
    p = p.removeprefix("unix://")
    channel = grpc.insecure_channel(f"unix:{p}", options=_channel_options(far=far))
    return _open(channel, target or f"unix://{p}", tls=False, timeout=timeout, wait=wait)


def _channel_options(*, far: bool) -> list[tuple[str, Any]]:
    # grpc also takes min_reconnect_backoff_ms as the connect timeout (until the server's
    # SETTINGS): 100 ms abandons a dial that is still starting `buildctl dial-stdio` in a
    # container or pod and dials again, several times under load. Its 20 s default there.
    if not far:
        return _CHANNEL_OPTIONS
    return [o for o in _CHANNEL_OPTIONS if o[0] != "grpc.min_reconnect_backoff_ms"]


def connect_tcp(
    host: str,
    port: int,
    *,
    tls: TLSConfig | None = None,
    timeout: float | None = None,
    wait: bool = True,
) -> Connection:
    """Connect to buildkitd over TCP (plain, TLS or mTLS) and wait until it answers."""
    grpc = load_grpc()

    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        channel = grpc.insecure_channel(addr, options=_CHANNEL_OPTIONS)
    else:
        opts = list(_CHANNEL_OPTIONS)
        if tls.server_name:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(addr, tls.credentials(), options=opts)
    return _open(channel, f"tcp://{addr}", tls=tls is not None, timeout=timeout, wait=wait)


# ----------------------------------------------------------------------------- bridges


def connect_bridge(
    dial: Callable[[], ByteStream], *, target: str, timeout: float | None = None, wait: bool = True
) -> Connection:
    """Open a channel whose every connection is a fresh ``dial()`` stream spliced through a
    private unix socket. ``target`` is only used in messages."""
    grpc = load_grpc()

    bridge = _Bridge(dial, target)
    channel = grpc.insecure_channel(f"unix:{bridge.path}", options=_channel_options(far=True))
    conn = Connection(channel=channel, target=target, _closers=[bridge.stop])
    if wait:
        try:
            wait_ready(conn, connect_timeout(timeout))
        except BuildkitConnectionError as e:
            conn.close()
            if bridge.last_error is not None:
                raise _dial_failure(bridge.last_error, target) from None
            raise e from None
        except BaseException:
            conn.close()
            raise
    return conn


def _dial_failure(exc: BaseException, target: str) -> BuilderError:
    if isinstance(exc, BuilderError):
        return exc
    return connection_error(exc, target=target)


def connect_address(
    address: str, *, tls: TLSConfig | None = None, timeout: float | None = None
) -> Connection:
    """Connect to a ``unix://`` or ``tcp://`` BuildKit address (what ``BUILDKIT_HOST`` holds).

    Container and pod addresses (``docker-container://``, ``kube-pod://``…) need a client for
    another system; the builder plugins that own them dial them and hand the stream to
    :func:`connect_bridge`.
    """
    if address.startswith("unix://"):
        return connect_unix(address, timeout=timeout)
    if address.startswith("tcp://"):
        hostport = address[len("tcp://") :].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            raise ValidationError(f"invalid BuildKit address `{address}`: use tcp://host:port")
        return connect_tcp(host.strip("[]"), int(port), tls=tls, timeout=timeout)
    raise ValidationError(
        f"unsupported BuildKit address `{address}`: use unix:///path or tcp://host:port",
        hint="container and pod addresses are reached through a builder type "
        "(envd context create --builder docker-container|kube-pod)",
    )


__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE",
    "ByteStream",
    "Connection",
    "TLSConfig",
    "connect_address",
    "connect_bridge",
    "connect_tcp",
    "connect_timeout",
    "connect_unix",
    "dial_process",
    "load_grpc",
    "parse_go_duration",
    "wait_ready",
]
