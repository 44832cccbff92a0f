"""FileSend: receive an export from the daemon.

The daemon calls ``FileSend/DiffCopy`` on the session. For ``tar``/``oci``/``docker`` exporters
the stream carries raw tarball chunks (BytesMessage); for ``local`` it carries fsutil packets
with the daemon as sender, so we act as the fsutil *receiver*: read STATs, create entries, REQ
regular files, write their DATA, then exchange FIN.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from envd_core.buildkit.session.walk import (
    MODE_DIR,
    MODE_SYMLINK,
    is_regular,
    posix_mode,
    relpath_ok,
)
from envd_core.errors import BuildError

if TYPE_CHECKING:
    from envd_core.buildkit._pb.fsutil_types_pb2 import Packet, Stat
    from envd_core.buildkit.session.h2serve import CallContext

DIFFCOPY_METHOD = "/moby.filesync.v1.FileSend/DiffCopy"


@dataclass(frozen=True)
class ExportTarget:
    """Where an export that the daemon streams back to the client goes.

    Use `ExportTarget.file` for ``tar``/``oci``/``docker`` exporters (a path, ``"-"`` for stdout,
    or a binary file object) and `ExportTarget.directory` for the ``local`` exporter.
    """

    kind: str
    path: str | None = None
    fileobj: IO[bytes] | None = None

    @classmethod
    def file(cls, target: str | os.PathLike[str] | IO[bytes]) -> ExportTarget:
        """A tarball target: a file path, ``"-"`` for stdout, or a writable binary file object."""
        if isinstance(target, (str, os.PathLike)):
            path = os.fspath(target)
            if path == "-":
                return cls(kind="file", fileobj=_stdout_binary())
            return cls(kind="file", path=os.path.abspath(path))
        return cls(kind="file", fileobj=target)

    @classmethod
    def directory(cls, path: str | os.PathLike[str]) -> ExportTarget:
        """A directory target for the ``local`` exporter (created if missing)."""
        return cls(kind="directory", path=os.path.abspath(os.fspath(path)))


def _stdout_binary() -> IO[bytes]:
    import sys

    return sys.stdout.buffer


class FileSendService:
    """Serves ``FileSend/DiffCopy``; the exporter index picks the target."""

    def __init__(self, targets: Sequence[ExportTarget]) -> None:
        self.targets = list(targets)
        #: Why receiving an export failed on this side; the daemon only ever sees EOF.
        self.errors: list[str] = []

    def diff_copy(self, request_iterator: Iterator[bytes], context: CallContext) -> Iterator[bytes]:
        """The gRPC handler (raw bytes in, raw bytes out)."""
        import grpc

        md = dict(context.invocation_metadata())
        raw_index = md.get("buildkit-attachable-exporter-id", "0")
        try:
            index = int(raw_index)
        except ValueError:
            index = 0
        if not 0 <= index < len(self.targets):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no export target for exporter {index}")
        target = self.targets[index]
        if target.kind == "file":
            return self._receive_file(target, request_iterator, context)
        return receive_directory(
            target.path or ".", request_iterator, context, on_error=self.errors.append
        )

    def _receive_file(
        self, target: ExportTarget, request_iterator: Iterator[bytes], context: CallContext
    ) -> Iterator[bytes]:
        import grpc

        from envd_core.buildkit._pb import filesync_pb2

        msg = filesync_pb2.BytesMessage()
        fh: IO[bytes]
        owned = target.fileobj is None
        try:
            if owned:
                assert target.path is not None
                os.makedirs(os.path.dirname(target.path) or ".", exist_ok=True)
                fh = open(target.path + ".partial", "wb")  # noqa: SIM115 - closed below
            else:
                assert target.fileobj is not None
                fh = target.fileobj
            try:
                for raw in request_iterator:
                    msg.ParseFromString(raw)
                    fh.write(msg.data)
                fh.flush()
            finally:
                if owned:
                    fh.close()
            if owned:
                assert target.path is not None
                os.replace(target.path + ".partial", target.path)
        except OSError as exc:
            self.errors.append(f"writing `{target.path or 'the export stream'}`: {exc}")
            context.abort(grpc.StatusCode.INTERNAL, f"writing export: {exc}")
        yield from ()  # a generator that sends nothing: only the daemon streams


def receive_directory(
    dest: str,
    request_iterator: Iterator[bytes],
    context: CallContext,
    on_error: Callable[[str], None] | None = None,
) -> Iterator[bytes]:
    """Act as the fsutil receiver writing into ``dest``; yields serialized outgoing packets."""
    import grpc

    from envd_core.buildkit._pb import fsutil_types_pb2 as fs

    packet_type = fs.Packet
    os.makedirs(dest, exist_ok=True)
    out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    failure: list[str] = []

    def receive() -> None:
        files: dict[int, tuple[str, int, int]] = {}
        # Hardlinks name an earlier entry whose data may still be on its way: link when it lands.
        pending_links: dict[str, list[str]] = {}
        open_files: dict[int, IO[bytes]] = {}
        dir_times: list[tuple[str, int, int]] = []
        index = -1
        listing_done = False
        fin_sent = False
        try:
            for raw in request_iterator:
                packet = packet_type.FromString(raw)
                if packet.type == packet_type.PACKET_STAT:
                    if not packet.HasField("stat"):
                        listing_done = True
                    else:
                        index += 1
                        _create_entry(
                            dest, packet.stat, index, files, dir_times, out, pending_links
                        )
                elif packet.type == packet_type.PACKET_DATA:
                    done = _write_data(dest, packet, files, open_files)
                    if done is not None:
                        for link in pending_links.pop(done, ()):
                            os.link(done, link)
                elif packet.type == packet_type.PACKET_FIN:
                    continue  # the sender's reply to our FIN; drain until EOF
                elif packet.type == packet_type.PACKET_ERR:
                    raise BuildError(
                        f"export to `{dest}` failed on the daemon: "
                        f"{packet.data.decode('utf-8', 'replace')}"
                    )
                if listing_done and not files and not open_files and not fin_sent:
                    # Directory times last: writing files inside would change them again.
                    for path, atime, mtime in reversed(dir_times):
                        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
                    out.put(packet_type(type=packet_type.PACKET_FIN).SerializeToString())
                    fin_sent = True
        except Exception as exc:  # noqa: BLE001 - reported on the stream, not lost in a thread
            failure.append(str(exc) or type(exc).__name__)
            if on_error is not None:
                on_error(f"writing into `{dest}`: {failure[0]}")
        finally:
            # Always wake the sender side, even if closing a file fails too (disk full):
            # a receiver that dies silently leaves the daemon and the build waiting forever.
            for fh in open_files.values():
                with contextlib.suppress(OSError):
                    fh.close()
            out.put(None)

    threading.Thread(target=receive, name="envd-filesend-recv", daemon=True).start()

    def outgoing() -> Iterator[bytes]:
        while True:
            item = out.get()
            if item is None:
                break
            yield item
        if failure:
            context.abort(grpc.StatusCode.INTERNAL, f"receiving export: {failure[0]}")

    return outgoing()


def _create_entry(
    dest: str,
    stat: Stat,
    index: int,
    files: dict[int, tuple[str, int, int]],
    dir_times: list[tuple[str, int, int]],
    out: queue.SimpleQueue[bytes | None],
    pending_links: dict[str, list[str]],
) -> None:
    from envd_core.buildkit._pb import fsutil_types_pb2 as fs

    if not relpath_ok(stat.path):
        raise BuildError(f"export sent an unsafe path `{stat.path}`; refusing to write it")
    target = os.path.join(dest, *stat.path.split("/"))
    mode = stat.mode
    if os.path.lexists(target) and not (mode & MODE_DIR and os.path.isdir(target)):
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    if mode & MODE_DIR:
        os.makedirs(target, exist_ok=True)
        os.chmod(target, posix_mode(mode) & 0o7777)
        dir_times.append((target, stat.mod_time, stat.mod_time))
    elif mode & MODE_SYMLINK:
        os.symlink(stat.linkname, target)
        os.utime(target, ns=(stat.mod_time, stat.mod_time), follow_symlinks=False)
    elif is_regular(mode):
        if stat.linkname:
            if not relpath_ok(stat.linkname):
                raise BuildError(f"export sent an unsafe hardlink `{stat.linkname}`")
            source = os.path.join(dest, *stat.linkname.split("/"))
            if any(info[0] == source for info in files.values()):
                pending_links.setdefault(source, []).append(target)
            else:
                os.link(source, target)
            return
        files[index] = (target, posix_mode(mode) & 0o7777, stat.mod_time)
        out.put(fs.Packet(type=fs.Packet.PACKET_REQ, ID=index).SerializeToString())
    else:
        # Devices, pipes: only meaningful (and permitted) for root; skip otherwise.
        try:
            os.mknod(target, posix_mode(mode), os.makedev(stat.devmajor, stat.devminor))
        except PermissionError:
            return


def _write_data(
    dest: str,
    packet: Packet,
    files: dict[int, tuple[str, int, int]],
    open_files: dict[int, IO[bytes]],
) -> str | None:
    """Write one DATA packet; return the file's path once it is complete."""
    info = files.get(packet.ID)
    if info is None:
        raise BuildError(f"export sent data for unknown file id {packet.ID}")
    path, mode, mtime = info
    fh = open_files.get(packet.ID)
    if fh is None:
        fh = open(path, "wb")  # noqa: SIM115 - closed on the empty chunk
        open_files[packet.ID] = fh
    if packet.data:
        fh.write(packet.data)
        return None
    fh.close()
    del open_files[packet.ID]
    del files[packet.ID]
    os.chmod(path, mode)
    os.utime(path, ns=(mtime, mtime))
    return path
