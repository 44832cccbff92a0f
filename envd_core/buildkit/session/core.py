"""The BuildKit session: our gRPC services, carried inside ``Control.Session``.

On a session the daemon is the HTTP/2 *client* and we are the server, but grpcio cannot serve
on an arbitrary byte stream. So each session runs a private ``grpc.server`` on a unix socket in
a private temp dir, opens one connection to it, and splices bytes between that connection and
the ``Control.Session`` stream (each message one chunk of raw HTTP/2).
"""

from __future__ import annotations

import os
import secrets as _random
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from envd_core.buildkit.session.auth import CREDENTIALS_METHOD, AuthProvider
from envd_core.buildkit.session.filesend import DIFFCOPY_METHOD as FILESEND_METHOD
from envd_core.buildkit.session.filesend import ExportTarget, FileSendService
from envd_core.buildkit.session.filesync import DIFFCOPY_METHOD as FILESYNC_METHOD
from envd_core.buildkit.session.filesync import FileSyncService, LocalDir, TransferStats
from envd_core.buildkit.session.secrets import GET_SECRET_METHOD, SecretSource, SecretsService
from envd_core.errors import BuilderError

if TYPE_CHECKING:
    import grpc

SESSION_METHOD = "/moby.buildkit.v1.Control/Session"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
MAX_MESSAGE = 16 << 20
# One bridge read; sent as one BytesMessage. Well under the daemon's 16 MiB limit.
BRIDGE_CHUNK = 1 << 20
# Many threads: every streaming call holds one for its whole life, and Health must never wait.
SERVER_THREADS = 64
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """A random 25-character base36 id (the same shape as the Go client's)."""
    return "".join(_random.choice(_ID_ALPHABET) for _ in range(25))


def _encode_bytes_message(data: bytes) -> bytes:
    """Serialize ``BytesMessage{data=1}`` by hand: the hot path of every transfer."""
    n = len(data)
    header = bytearray(b"\x0a")
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            header.append(byte | 0x80)
        else:
            header.append(byte)
            break
    return bytes(header) + data


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
        #: Every FileSync transfer of this session, appended when it starts (updated live).
        self.transfers: list[TransferStats] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._tmpdir: str | None = None
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._call: Any = None
        self._pump: threading.Thread | None = None

    # -- services -----------------------------------------------------------------------------

    def methods(self) -> list[str]:
        """The gRPC methods this session serves (advertised to the daemon)."""
        methods = [HEALTH_METHOD, FILESYNC_METHOD]
        if self.exports:
            methods.append(FILESEND_METHOD)
        if self.auth is not None:
            methods.append(CREDENTIALS_METHOD)
        methods.append(GET_SECRET_METHOD)
        return methods

    def metadata(self) -> list[tuple[str, str]]:
        """The ``Control.Session`` call metadata that describes this session to the daemon."""
        md = [
            ("x-docker-expose-session-uuid", self.id),
            ("x-docker-expose-session-sharedkey", self.shared_key),
            ("x-docker-expose-session-name", self.name),
        ]
        md += [("x-docker-expose-session-grpc-method", m) for m in self.methods()]
        return md

    def _handlers(self) -> list[Any]:
        import grpc

        from envd_core.buildkit._pb import auth_pb2, fsutil_types_pb2, health_pb2, secrets_pb2

        def check(request: Any, context: grpc.ServicerContext) -> Any:
            return health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.SERVING
            )

        filesync = FileSyncService(self.local_dirs, on_transfer=self.transfers.append)
        handlers = [
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        check,
                        request_deserializer=health_pb2.HealthCheckRequest.FromString,
                        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "moby.filesync.v1.FileSync",
                {
                    "DiffCopy": grpc.stream_stream_rpc_method_handler(
                        filesync.diff_copy,
                        request_deserializer=fsutil_types_pb2.Packet.FromString,
                        response_serializer=fsutil_types_pb2.Packet.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "moby.buildkit.secrets.v1.Secrets",
                {
                    "GetSecret": grpc.unary_unary_rpc_method_handler(
                        SecretsService(self.secrets).get_secret,
                        request_deserializer=secrets_pb2.GetSecretRequest.FromString,
                        response_serializer=secrets_pb2.GetSecretResponse.SerializeToString,
                    )
                },
            ),
        ]
        if self.exports:
            # Raw bytes both ways: the payload type depends on the exporter.
            handlers.append(
                grpc.method_handlers_generic_handler(
                    "moby.filesync.v1.FileSend",
                    {
                        "DiffCopy": grpc.stream_stream_rpc_method_handler(
                            FileSendService(self.exports).diff_copy
                        )
                    },
                )
            )
        if self.auth is not None:
            handlers.append(
                grpc.method_handlers_generic_handler(
                    "moby.filesync.v1.Auth",
                    {
                        "Credentials": grpc.unary_unary_rpc_method_handler(
                            self.auth.credentials,
                            request_deserializer=auth_pb2.CredentialsRequest.FromString,
                            response_serializer=auth_pb2.CredentialsResponse.SerializeToString,
                        )
                    },
                )
            )
        return handlers

    # -- lifecycle ----------------------------------------------------------------------------

    def serve_local(self) -> str:
        """Start only the private gRPC server and return its ``unix:`` address.

        `start` calls this; tests may also connect to the address directly, playing the
        daemon's side of the session.
        """
        import grpc
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._server is not None:
                assert self._tmpdir is not None
                return "unix:" + os.path.join(self._tmpdir, "s.sock")
            if self._closed:
                raise BuilderError(f"session `{self.id}` is closed; create a new session")
            base = os.environ.get("XDG_RUNTIME_DIR")
            if not base or not os.path.isdir(base) or len(base) > 60:
                base = None  # unix socket paths are limited to ~107 bytes
            self._tmpdir = tempfile.mkdtemp(prefix="envd-session-", dir=base)
            path = os.path.join(self._tmpdir, "s.sock")
            server = grpc.server(
                ThreadPoolExecutor(max_workers=SERVER_THREADS, thread_name_prefix="envd-session"),
                handlers=self._handlers(),
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                    ("grpc.http2.max_ping_strikes", 0),
                ],
            )
            server.add_insecure_port("unix:" + path)
            server.start()
            self._server = server
            return "unix:" + path

    def start(self, channel: grpc.Channel) -> None:
        """Attach to the daemon: open ``Control.Session`` on ``channel`` and bridge it."""
        with self._lock:
            if self._started:
                return
            self._started = True
        address = self.serve_local()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[len("unix:") :])
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        from envd_core.buildkit._pb import filesync_pb2

        open_session = channel.stream_stream(
            SESSION_METHOD,
            request_serializer=None,
            response_deserializer=filesync_pb2.BytesMessage.FromString,
        )
        self._call = open_session(self._outgoing(), metadata=self.metadata())
        self._pump = threading.Thread(target=self._incoming, name="envd-session-in", daemon=True)
        self._pump.start()

    def _outgoing(self) -> Iterator[bytes]:
        """Bytes from our server to the daemon; returning half-closes the session stream."""
        sock, wake = self._sock, self._wake_r
        assert sock is not None and wake is not None
        while True:
            try:
                ready, _, _ = select.select([sock, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                data = sock.recv(BRIDGE_CHUNK)
            except OSError:
                return
            if not data:
                return
            yield _encode_bytes_message(data)

    def _incoming(self) -> None:
        """Bytes from the daemon into our server, until the daemon ends the stream."""
        sock = self._sock
        assert sock is not None
        try:
            for message in self._call:
                sock.sendall(message.data)
        except Exception as exc:
            if not self._closed:
                self.error = exc
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Half-close the stream, let the daemon finish, stop the server, remove temp files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._wake_w is not None:
            os.write(self._wake_w, b"x")
        if self._pump is not None:
            self._pump.join(timeout)
            if self._pump.is_alive() and self._call is not None:
                self._call.cancel()
                self._pump.join(timeout)
        if self._server is not None:
            self._server.stop(grace=1.0).wait(timeout)
        if self._sock is not None:
            self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: never leave a socket dir behind
        if getattr(self, "_tmpdir", None) and not getattr(self, "_closed", True):
            shutil.rmtree(self._tmpdir, ignore_errors=True)
