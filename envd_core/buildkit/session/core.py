"""The BuildKit session: our gRPC services, carried inside ``Control.Session``.

On a session the daemon is the HTTP/2 *client* and we are the server. We serve HTTP/2 ourselves
(`h2serve`) directly on the ``Control.Session`` stream: bytes from the daemon are fed to the
HTTP/2 connection, and everything it writes is coalesced into ``BytesMessage`` chunks. The same
server can also listen on a private unix socket (`Session.serve_local`), which tests use to talk
to the services with an ordinary gRPC client.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from envd_core.buildkit.session.auth import CREDENTIALS_METHOD, AuthProvider
from envd_core.buildkit.session.filesend import DIFFCOPY_METHOD as FILESEND_METHOD
from envd_core.buildkit.session.filesend import ExportTarget, FileSendService
from envd_core.buildkit.session.filesync import DIFFCOPY_METHOD as FILESYNC_METHOD
from envd_core.buildkit.session.filesync import FileSyncService, LocalDir, TransferStats
from envd_core.buildkit.session.h2serve import Buffer, CallContext, H2GrpcConnection, Method
from envd_core.buildkit.session.secrets import GET_SECRET_METHOD, SecretSource, SecretsService
from envd_core.errors import BuilderError

if TYPE_CHECKING:
    import grpc

    from envd_core.buildkit._pb import health_pb2
    from envd_core.buildkit._pb.filesync_pb2 import BytesMessage

SESSION_METHOD = "/moby.buildkit.v1.Control/Session"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
MAX_MESSAGE = 16 << 20
# Coalesce small HTTP/2 writes up to this size per BytesMessage (a bigger single write goes
# out whole); well under the 16 MiB limit.
SESSION_CHUNK = 1 << 20
# Bytes written by the HTTP/2 side but not yet handed to grpc; producers pause above this.
MAX_BACKLOG = 16 << 20
# Small writes wait this long for company before going out as one BytesMessage.
COALESCE_BYTES = 256 << 10
COALESCE_SECONDS = 0.0005
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """A random 25-character base36 id (the same shape as the Go client's)."""
    return "".join(_random.choice(_ID_ALPHABET) for _ in range(25))


def _bytes_message_header(n: int) -> bytes:
    """The tag and length that start ``BytesMessage{data=1}`` with ``n`` bytes of data.

    The message is serialized by hand (header, then the data, joined once): the hot path of
    every transfer.
    """
    header = bytearray(b"\x0a")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            header.append(byte | 0x80)
        else:
            header.append(byte)
            break
    return bytes(header)


class _SessionCall(Protocol):
    """The open ``Control.Session`` call: the daemon's messages, and a way to cancel it."""

    def __iter__(self) -> Iterator[BytesMessage]: ...
    def cancel(self) -> bool: ...


class Session:
    """Client-side services for one or more solves; use as a context manager or start/close.

    ``shared_key`` becomes part of the daemon's cache key for local sources: keep it stable
    per project directory so a second build only re-sends changed files.
    """

    def __init__(
        self,
        *,
        shared_key: str,
        local_dirs: Mapping[str, LocalDir] | None = None,
        secrets: Mapping[str, SecretSource] | None = None,
        auth: AuthProvider | None = None,
        export: ExportTarget | Sequence[ExportTarget] | None = None,
        name: str = "envd",
    ) -> None:
        self.id = new_id()
        self.shared_key = shared_key
        self.name = name
        self.local_dirs = dict(local_dirs or {})
        self.secrets = dict(secrets or {})
        self.auth = auth
        if export is None:
            self.exports: list[ExportTarget] = []
        elif isinstance(export, ExportTarget):
            self.exports = [export]
        else:
            self.exports = list(export)
        self._filesend = FileSendService(self.exports)
        #: Every FileSync transfer of this session, appended when it starts (updated live).
        self.transfers: list[TransferStats] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._tmpdir: str | None = None
        self._listener: socket.socket | None = None
        self._local_conns: list[tuple[socket.socket, H2GrpcConnection]] = []
        self._conn: H2GrpcConnection | None = None
        self._out: list[Buffer] = []
        self._out_bytes = 0
        self._out_cond = threading.Condition()
        self._out_done = False
        self._call: _SessionCall | None = None
        self._pump: threading.Thread | None = None
        #: Session-stream messages sent to / received from the daemon (for benchmarks).
        self.messages_out = 0
        self.messages_in = 0

    # -- services -----------------------------------------------------------------------------

    @property
    def export_errors(self) -> list[str]:
        """Why receiving an export failed on this side (the daemon only reports EOF)."""
        return list(self._filesend.errors)

    def methods(self) -> list[str]:
        """The gRPC methods this session serves (advertised to the daemon)."""
        return list(self._methods())

    def metadata(self) -> list[tuple[str, str]]:
        """The ``Control.Session`` call metadata that describes this session to the daemon."""
        md = [
            ("x-docker-expose-session-uuid", self.id),
            ("x-docker-expose-session-sharedkey", self.shared_key),
            ("x-docker-expose-session-name", self.name),
        ]
        md += [("x-docker-expose-session-grpc-method", m) for m in self.methods()]
        return md

    def _methods(self) -> dict[str, Method]:
        from envd_core.buildkit._pb import auth_pb2, fsutil_types_pb2, health_pb2, secrets_pb2

        serving = health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
        )

        def check(
            request: health_pb2.HealthCheckRequest, context: CallContext
        ) -> health_pb2.HealthCheckResponse:
            return serving

        filesync = FileSyncService(self.local_dirs, on_transfer=self.transfers.append)
        methods = {
            HEALTH_METHOD: Method(
                check,
                stream_requests=False,
                stream_responses=False,
                deserialize=health_pb2.HealthCheckRequest.FromString,
                serialize=health_pb2.HealthCheckResponse.SerializeToString,
            ),
            FILESYNC_METHOD: Method(
                filesync.diff_copy,
                stream_requests=True,
                stream_responses=True,
                deserialize=fsutil_types_pb2.Packet.FromString,
                serialize=fsutil_types_pb2.Packet.SerializeToString,
            ),
        }
        if self.exports:
            # Raw bytes both ways: the payload type depends on the exporter.
            methods[FILESEND_METHOD] = Method(
                self._filesend.diff_copy,
                stream_requests=True,
                stream_responses=True,
            )
        if self.auth is not None:
            methods[CREDENTIALS_METHOD] = Method(
                self.auth.credentials,
                stream_requests=False,
                stream_responses=False,
                deserialize=auth_pb2.CredentialsRequest.FromString,
                serialize=auth_pb2.CredentialsResponse.SerializeToString,
            )
        methods[GET_SECRET_METHOD] = Method(
            SecretsService(self.secrets).get_secret,
            stream_requests=False,
            stream_responses=False,
            deserialize=secrets_pb2.GetSecretRequest.FromString,
            serialize=secrets_pb2.GetSecretResponse.SerializeToString,
        )
        return methods

    # -- a local listener (tests, tools) -------------------------------------------------------

    def serve_local(self) -> str:
        """Also serve the session's services on a private unix socket; return ``unix:PATH``.

        Tests use it to call the services with an ordinary gRPC client, playing the daemon.
        """
        with self._lock:
            if self._closed:
                raise BuilderError(f"session `{self.id}` is closed; create a new session")
            if self._listener is not None:
                assert self._tmpdir is not None
                return "unix:" + os.path.join(self._tmpdir, "s.sock")
            base = os.environ.get("XDG_RUNTIME_DIR")
            if not base or not os.path.isdir(base) or len(base) > 60:
                base = None  # unix socket paths are limited to ~107 bytes
            self._tmpdir = tempfile.mkdtemp(prefix="envd-session-", dir=base)
            path = os.path.join(self._tmpdir, "s.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(16)
            self._listener = listener
        threading.Thread(target=self._accept, name="envd-session-accept", daemon=True).start()
        return "unix:" + path

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        methods = self._methods()
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            conn = H2GrpcConnection(methods, sock.sendall)
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._local_conns.append((sock, conn))
            threading.Thread(
                target=self._read_local, args=(sock, conn), name="envd-session-local", daemon=True
            ).start()

    @staticmethod
    def _read_local(sock: socket.socket, conn: H2GrpcConnection) -> None:
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                conn.feed(data)
        except Exception:  # noqa: BLE001 - any failure (reset, bad HTTP/2) ends this connection
            pass
        finally:
            conn.close()

    # -- the session stream --------------------------------------------------------------------

    def start(self, channel: grpc.Channel) -> None:
        """Attach to the daemon: open ``Control.Session`` on ``channel`` and serve on it."""
        with self._lock:
            if self._closed:
                raise BuilderError(f"session `{self.id}` is closed; create a new session")
            if self._started:
                return
            self._started = True
        from envd_core.buildkit._pb import filesync_pb2

        self._conn = H2GrpcConnection(
            self._methods(),
            self._enqueue,
            write_parts=self._enqueue_parts,
            backlog=lambda: self._out_bytes,
            max_backlog=MAX_BACKLOG,
        )
        open_session: grpc.StreamStreamMultiCallable[bytes, BytesMessage] = channel.stream_stream(
            SESSION_METHOD,
            request_serializer=None,
            response_deserializer=filesync_pb2.BytesMessage.FromString,
        )
        self._call = open_session(self._outgoing(), metadata=tuple(self.metadata()))
        self._pump = threading.Thread(target=self._incoming, name="envd-session-in", daemon=True)
        self._pump.start()

    def _enqueue(self, data: bytes) -> None:
        """Called by the HTTP/2 side (in order, under its lock) with bytes for the daemon."""
        with self._out_cond:
            self._out.append(data)
            self._out_bytes += len(data)
            if len(self._out) == 1:  # the sender only ever waits on an empty queue
                self._out_cond.notify()

    def _enqueue_parts(self, parts: list[Buffer]) -> None:
        """Like `_enqueue`, for DATA frames as buffers that `_outgoing` joins (one copy)."""
        with self._out_cond:
            was_empty = not self._out
            self._out.extend(parts)
            self._out_bytes += sum(map(len, parts))
            if was_empty:
                self._out_cond.notify()

    def _outgoing(self) -> Iterator[bytes]:
        """Coalesced HTTP/2 bytes for the daemon; returning half-closes the session stream."""
        while True:
            with self._out_cond:
                while not self._out and not self._out_done:
                    self._out_cond.wait()
                if not self._out:
                    return
                if self._out_bytes < COALESCE_BYTES and not self._out_done:
                    # Give producers a moment to add more: one BytesMessage per tiny HTTP/2
                    # frame would cost a gRPC write each.
                    self._out_cond.wait(COALESCE_SECONDS)
                backlogged = self._out_bytes > MAX_BACKLOG
                take, size = 0, 0
                while take < len(self._out) and (
                    take == 0 or size + len(self._out[take]) <= SESSION_CHUNK
                ):
                    size += len(self._out[take])
                    take += 1
                chunks = self._out[:take]
                del self._out[:take]
                chunks.insert(0, _bytes_message_header(size))
                self._out_bytes -= size
            conn = self._conn
            if conn is not None and backlogged:
                conn.notify()
            self.messages_out += 1
            yield b"".join(chunks)

    def _incoming(self) -> None:
        """Bytes from the daemon into the HTTP/2 side, until the daemon ends the stream."""
        conn, call = self._conn, self._call
        assert conn is not None and call is not None  # start() sets both before this thread
        try:
            for message in call:
                self.messages_in += 1
                conn.feed(message.data)
        except Exception as exc:  # noqa: BLE001 - kept as the session's error for the build
            if not self._closed:
                self.error = exc
        finally:
            conn.close()

    def flow_stats(self) -> dict[str, float]:
        """The session connection's HTTP/2 counters (`h2serve.FlowStats`) as a dict."""
        import dataclasses

        if self._conn is None:
            return {}
        return dataclasses.asdict(self._conn.stats)

    def close(self, timeout: float = 5.0) -> None:
        """Half-close the stream, let the daemon finish, stop serving, remove temp files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._out_cond:
            self._out_done = True
            self._out_cond.notify_all()
        if self._pump is not None:
            self._pump.join(timeout)
            if self._pump.is_alive() and self._call is not None:
                self._call.cancel()
                self._pump.join(timeout)
        if self._conn is not None:
            self._conn.close()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for sock, conn in self._local_conns:
            conn.close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: never leave a socket dir behind
        tmpdir = getattr(self, "_tmpdir", None)  # __init__ may not have got that far
        if tmpdir and not getattr(self, "_closed", True):
            shutil.rmtree(tmpdir, ignore_errors=True)
