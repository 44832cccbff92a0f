"""FileSync: send local directories to the daemon (client is the fsutil *sender*).

Protocol (fsutil diffcopy): one STAT packet per entry in walk order, an empty STAT to end the
listing; the daemon answers with REQ packets for the regular files it needs (by position in the
listing), which we stream as DATA chunks closed by an empty DATA; the daemon sends FIN, we answer
FIN and end the call. Files are read in chunks while streaming, never held whole in memory.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from envd_core.buildkit.session.h2serve import Framed
from envd_core.buildkit.session.patterns import parse_ignore_file
from envd_core.buildkit.session.walk import Entry, Filter, is_regular, resolve_follow_paths, walk
from envd_core.buildkit.session.wire import (
    PACKET_ERR,
    PACKET_FIN,
    append_data,
    append_simple,
    append_stat,
)
from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit._pb.fsutil_types_pb2 import Packet
    from envd_core.buildkit.session.h2serve import CallContext, RequestStream

    # A request from the daemon: ("req", file id), ("fin", None), ("err", text), ("eof", None).
    _Request = tuple[str, int | str | None]

DIFFCOPY_METHOD = "/moby.filesync.v1.FileSync/DiffCopy"
# DATA packet size (Go's sender uses 32 KiB). Packets are hand-encoded into batches, so their
# number costs us little; the daemon parses each as one gRPC message.
CHUNK_SIZE = 1 << 20
# A batch goes out at this many packets (listing, small files) or bytes, whichever comes first.
BATCH_PACKETS = 128
BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class LocalDir:
    """A local directory the daemon may read as ``local://NAME``.

    ``include``/``exclude``/``follow_paths`` are applied on top of whatever the daemon asks for;
    with ``use_dockerignore`` the directory's ``.dockerignore`` adds excludes as Docker does.
    """

    path: str | os.PathLike[str]
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    follow_paths: Sequence[str] = ()
    use_dockerignore: bool = True

    def root(self) -> str:
        """The absolute directory path; raises `ValidationError` if it is not a directory."""
        root = os.path.abspath(os.fspath(self.path))
        if not os.path.isdir(root):
            raise ValidationError(
                f"local directory `{root}` does not exist or is not a directory; "
                "create it or point the build at an existing directory"
            )
        return root

    def ignore_patterns(self) -> list[str]:
        """Excludes from ``.dockerignore`` (empty when disabled or absent)."""
        if not self.use_dockerignore:
            return []
        try:
            with open(os.path.join(self.root(), ".dockerignore"), encoding="utf-8") as fh:
                return parse_ignore_file(fh.read())
        except FileNotFoundError:
            return []


@dataclass
class TransferStats:
    """What one DiffCopy call sent: counted on the sender, for tests and benchmarks.

    Reported when the call starts and updated live; ``finished`` turns true at the end.
    """

    dir_name: str
    entries: int = 0
    files_requested: int = 0
    data_packets: int = 0
    data_bytes: int = 0
    bytes_by_path: dict[str, int] = field(default_factory=dict)
    finished: bool = False


def _metadata_values(md: Mapping[str, list[str]], key: str) -> list[str]:
    values = md.get(key, [])
    if md.get(f"{key}-encoded", ["0"])[0] in ("1", "true"):
        values = [urllib.parse.unquote_plus(v) for v in values]
    return [v for v in values if v]


def invocation_metadata(context: CallContext) -> dict[str, list[str]]:
    """Incoming metadata as lowercase key -> list of values."""
    md: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata():
        md.setdefault(key.lower(), []).append(value)
    return md


class FileSyncService:
    """Serves ``FileSync/DiffCopy`` for a fixed set of named directories."""

    def __init__(
        self,
        dirs: Mapping[str, LocalDir],
        on_transfer: Callable[[TransferStats], None] | None = None,
    ) -> None:
        self.dirs = dict(dirs)
        self.on_transfer = on_transfer

    def filter_for(self, local: LocalDir, md: Mapping[str, list[str]]) -> Filter:
        """Combine the directory's own rules with the daemon's request (fsutil FilterFS)."""
        root = local.root()
        includes = list(local.include) + _metadata_values(md, "include-patterns")
        daemon_excludes = _metadata_values(md, "exclude-patterns")
        if md.get("override-excludes", ["false"])[0] == "true" and daemon_excludes:
            excludes = daemon_excludes
        else:
            excludes = list(local.exclude) + local.ignore_patterns() + daemon_excludes
        follow = list(local.follow_paths) + _metadata_values(md, "followpaths")
        if follow:
            includes += follow + resolve_follow_paths(root, follow)
        return Filter.build(includes, excludes)

    def diff_copy(self, request_iterator: RequestStream, context: CallContext) -> Iterator[Framed]:
        """The gRPC handler (served by `h2serve`): a generator of outgoing packets."""
        import grpc

        md = invocation_metadata(context)
        name = (md.get("dir-name") or [""])[0]
        local = self.dirs.get(name)
        if local is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no access allowed to dir {name!r}")
        try:
            flt = self.filter_for(local, md)
            root = local.root()
        except ValidationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        stats = TransferStats(dir_name=name)
        return self._send(root, flt, request_iterator, context, stats)

    def _send(
        self,
        root: str,
        flt: Filter,
        request_iterator: RequestStream,
        context: CallContext,
        stats: TransferStats,
    ) -> Iterator[Framed]:
        from envd_core.buildkit._pb import fsutil_types_pb2 as fs

        packet_type = fs.Packet  # a local name: looked up once per packet in the hot loop

        def convert(packet: Packet) -> _Request:
            if packet.type == packet_type.PACKET_REQ:
                return ("req", packet.ID)
            if packet.type == packet_type.PACKET_FIN:
                return ("fin", None)
            if packet.type == packet_type.PACKET_ERR:
                return ("err", packet.data.decode("utf-8", "replace"))
            return ("skip", None)

        # The h2serve request stream can be polled: requests are picked up between writes, so
        # files are served while the listing is still going, without a reader thread.
        poll = request_iterator.poll

        def pending() -> _Request | None:
            """A waiting request, without blocking."""
            while True:
                try:
                    packet = poll()
                except StopIteration:
                    return ("eof", None)
                if packet is None:
                    return None
                kind, value = convert(packet)
                if kind != "skip":
                    return kind, value

        def wait() -> _Request:
            """The next request, blocking."""
            for packet in request_iterator:
                kind, value = convert(packet)
                if kind != "skip":
                    return kind, value
            return ("eof", None)

        if self.on_transfer is not None:
            self.on_transfer(stats)
        files: dict[int, Entry] = {}
        # Packets are encoded by hand (`wire`) into one buffer per batch, already framed for
        # gRPC: one lock round and one write per batch, not per packet, and no protobuf object
        # per packet. Small files cost a STAT, a DATA and an empty DATA each.
        out = Framed()
        packets = 0
        # File data is read into this reused buffer (no allocation per read), then copied once
        # into the batch.
        chunk = bytearray(CHUNK_SIZE)
        chunk_view = memoryview(chunk)

        def take() -> Framed:
            nonlocal out, packets
            batch, out, packets = out, Framed(), 0
            return batch

        def serve(file_id: int) -> Iterator[Framed]:
            nonlocal packets
            entry = files.pop(file_id, None)
            if entry is None:
                raise _ProtocolError(f"invalid file request {file_id}")
            stats.files_requested += 1
            sent = 0
            # os-level calls: every syscall releases the GIL and waits to get it back, so
            # fewer calls per file (no fstat/ioctl of open(), no extra read for EOF) matter.
            fd = os.open(entry.abspath, os.O_RDONLY | os.O_CLOEXEC)
            try:
                while True:
                    n = os.readv(fd, (chunk,))
                    if n:
                        sent += n
                        stats.data_packets += 1
                        stats.data_bytes += n
                        append_data(out, file_id, chunk_view[:n])
                        packets += 1
                        if len(out) >= BATCH_BYTES:
                            yield take()
                    if n < CHUNK_SIZE:
                        break  # a short read of a regular file means end of file
            finally:
                os.close(fd)
            stats.bytes_by_path[entry.path] = stats.bytes_by_path.get(entry.path, 0) + sent
            append_data(out, file_id, b"")
            packets += 1
            if packets >= BATCH_PACKETS:
                yield take()

        def handle(kind: str, value: int | str | None) -> Iterator[Framed]:
            if kind == "req":
                assert isinstance(value, int)
                yield from serve(value)
            elif kind == "fin":
                append_simple(out, PACKET_FIN)
                yield take()
                raise _Done
            elif kind == "err":
                raise _ProtocolError(f"error from receiver: {value}")
            else:
                raise _Done

        try:
            try:
                for index, entry in enumerate(walk(root, flt)):
                    if is_regular(entry.mode):
                        files[index] = entry
                    stats.entries += 1
                    append_stat(out, entry)
                    packets += 1
                    if packets >= BATCH_PACKETS:
                        yield take()
                    while (request := pending()) is not None:
                        yield from handle(*request)
                append_stat(out, None)
                yield take()
                while True:
                    request = pending()
                    if request is None:
                        if out:
                            yield take()  # never block on the daemon with packets held back
                        request = wait()
                    yield from handle(*request)
            except _Done:
                return
            except (_ProtocolError, OSError) as exc:
                append_simple(out, PACKET_ERR, str(exc).encode())
                yield take()
                import grpc

                context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            chunk_view.release()
            stats.finished = True


class _Done(Exception):
    """The transfer ended normally (FIN exchanged or the daemon hung up)."""


class _ProtocolError(Exception):
    """The peer broke the diffcopy protocol or a file could not be read."""
