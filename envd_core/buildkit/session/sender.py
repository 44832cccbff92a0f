"""The fsutil *sender* of one FileSync transfer: the listing, paced, and the requested files.

Protocol (fsutil diffcopy): one STAT packet per entry in walk order, an empty STAT to end the
listing; the daemon answers with REQ packets for the regular files it needs (by position in the
listing), which we stream as DATA chunks closed by an empty DATA; the daemon sends FIN, we answer
FIN and end the call. Files are read in chunks while streaming, never held whole in memory.

Pacing. The daemon's receiver reads our packets in order on one goroutine. It hands each STAT
to a second goroutine, the one that creates the files and then sends their REQs, through about
256 buffered slots, and it writes each DATA packet itself. Creating the files is most of the
daemon's work in a first upload (a CPU profile of buildkitd v0.18.2: two thirds of its CPU in
``openat(O_CREAT)``), so two things decide the pace:

* the creating goroutine must never run out of STATs, so the listing stays well ahead of it;
* DATA must not queue behind STATs it cannot take yet, or writing the data waits for the
  creation of every file listed before it. The listing used to run as far ahead as the walk
  could go, and the requested files' data was then sent in bursts of thousands of files; the
  two goroutines took turns (a protocol trace showed seconds with REQs arriving and no window
  given back, then bursts of data with no REQs) instead of working at the same time.

So the listing is kept `LISTING_LEAD` files ahead of the daemon's requests: at that lead it
pauses and serves requests until the lead is down by `LISTING_STEP`, then lists again; the data
it sends meanwhile reaches the receiver a few hundred files after it asked. A daemon that stops
asking (an incremental upload, where unchanged files are not requested, or a stalled daemon)
doubles the lead after `LEAD_WAIT`, and `MAX_TIMEOUTS` such waits end the pacing, so a listing
nobody requests from costs at most a few short waits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from envd_core.buildkit.session.h2serve import Framed
from envd_core.buildkit.session.walk import Entry, Filter, is_regular, walk
from envd_core.buildkit.session.wire import (
    PACKET_ERR,
    PACKET_FIN,
    append_data,
    append_simple,
    append_stat,
)

if TYPE_CHECKING:
    from envd_core.buildkit._pb.fsutil_types_pb2 import Packet
    from envd_core.buildkit.session.filesync import TransferStats
    from envd_core.buildkit.session.h2serve import RequestStream

    # A request from the daemon: ("req", file id), ("fin", None), ("err", text), ("eof", None).
    _Request = tuple[str, int | str | None]

# DATA packet size (Go's sender uses 32 KiB). Packets are hand-encoded into batches, so their
# number costs us little; the daemon parses each as one gRPC message.
CHUNK_SIZE = 1 << 20
# A batch goes out at this many packets (listing, small files) or bytes, whichever comes first.
BATCH_PACKETS = 128
BATCH_BYTES = 1 << 20
# Entries listed beyond the last one requested at which the listing pauses, and by how many
# the daemon must catch up before it goes on. Below ~256 (the daemon's buffered STATs) its
# receiver never blocks on a STAT, so data never queues behind one; the step makes one pause per
# 64 entries rather than one per file. 0 turns pacing off.
LISTING_LEAD = 224
LISTING_STEP = 64
# Seconds a paused listing waits for a request before it doubles its lead instead, and how
# many such waits end the pacing (an incremental upload of an unchanged tree asks for nothing:
# it costs at most these, 75 ms).
LEAD_WAIT = 0.025
MAX_TIMEOUTS = 3
# A file still not requested this many entries after a later one was: the daemon skips files
# (an incremental upload requests only changed ones), so there is nothing to pace.
SKIP_MARGIN = 1024


class ProtocolError(Exception):
    """The peer broke the diffcopy protocol or a file could not be read."""


class _Done(Exception):
    """The transfer ended normally (FIN exchanged or the daemon hung up)."""


class Sender:
    """Sends one directory to the daemon's fsutil receiver; `run` yields framed batches.

    Packets are encoded by hand (`wire`) into one buffer per batch, already framed for gRPC:
    one lock round and one write per batch, not per packet, and no protobuf object per packet.
    Small files cost a STAT, a DATA and an empty DATA each. Requests are polled between writes
    (`RequestStream.poll`), so files are served while the listing is still going, without a
    reader thread.
    """

    def __init__(
        self, root: str, flt: Filter, requests: RequestStream, stats: TransferStats
    ) -> None:
        from envd_core.buildkit._pb import fsutil_types_pb2 as fs

        self.root = root
        self.filter = flt
        self.requests = requests
        self.stats = stats
        self._packet = fs.Packet
        self.out = Framed()
        self.packets = 0
        # Entries the daemon may request, by listing position.
        self.files: dict[int, Entry] = {}
        # Pacing: entries listed, the highest position requested, the positions of files
        # listed and how many of those have been requested (REQs come nearly in order).
        self.paced = LISTING_LEAD > 0
        self.listed_entries = 0
        self.requested = -1
        self.lead_limit = LISTING_LEAD
        self.listed: list[int] = []
        self.reached = 0
        self.stats_unsent = False
        # File data is read into this reused buffer (no allocation per read), then copied once
        # into the batch.
        self.chunk = bytearray(CHUNK_SIZE)

    # -- batches and requests -----------------------------------------------------------------

    def take(self) -> Framed:
        """The batch so far (to yield), and a fresh one."""
        batch, self.out, self.packets = self.out, Framed(), 0
        self.stats_unsent = False
        return batch

    def _convert(self, packet: Packet) -> _Request:
        kind = packet.type
        if kind == self._packet.PACKET_REQ:
            return ("req", packet.ID)
        if kind == self._packet.PACKET_FIN:
            return ("fin", None)
        if kind == self._packet.PACKET_ERR:
            return ("err", packet.data.decode("utf-8", "replace"))
        return ("skip", None)

    def pending(self, timeout: float = 0.0) -> _Request | None:
        """A waiting request (or one arriving within ``timeout`` seconds), else None."""
        while True:
            try:
                packet = self.requests.poll(timeout)
            except StopIteration:
                return ("eof", None)
            if packet is None:
                return None
            request = self._convert(packet)
            if request[0] != "skip":
                return request

    def wait(self) -> _Request:
        """The next request, blocking."""
        for packet in self.requests:
            request = self._convert(packet)
            if request[0] != "skip":
                return request
        return ("eof", None)

    def lead(self) -> int:
        """Entries listed beyond the last one the daemon requested."""
        return self.listed_entries - 1 - self.requested

    def _check_skips(self) -> None:
        """Stop pacing if the daemon passes over files it will never request."""
        listed, reached, files = self.listed, self.reached, self.files
        while reached < len(listed) and listed[reached] not in files:
            reached += 1
        if reached < len(listed) and self.requested - listed[reached] > SKIP_MARGIN:
            self.paced = False
        if reached > 4096:  # forget the files served, a slice at a time
            del listed[:reached]
            reached = 0
        self.reached = reached

    # -- serving ------------------------------------------------------------------------------

    def serve(self, file_id: int) -> Iterator[Framed]:
        """DATA packets for one requested file, then the empty DATA that ends it."""
        entry = self.files.pop(file_id, None)
        if entry is None:
            raise ProtocolError(f"invalid file request {file_id}")
        stats = self.stats
        stats.files_requested += 1
        sent = 0
        chunk = self.chunk
        # os-level calls: every syscall releases the GIL and waits to get it back, so fewer
        # calls per file (no fstat/ioctl of open(), no extra read for EOF) matter.
        fd = os.open(entry.abspath, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with memoryview(chunk) as view:
                while True:
                    n = os.readv(fd, (chunk,))
                    if n:
                        sent += n
                        stats.data_packets += 1
                        stats.data_bytes += n
                        append_data(self.out, file_id, view[:n])
                        self.packets += 1
                        if len(self.out) >= BATCH_BYTES:
                            yield self.take()
                    if n < CHUNK_SIZE:
                        break  # a short read of a regular file means end of file
        finally:
            os.close(fd)
        stats.bytes_by_path[entry.path] = stats.bytes_by_path.get(entry.path, 0) + sent
        append_data(self.out, file_id, b"")
        self.packets += 1
        if self.packets >= BATCH_PACKETS:
            yield self.take()

    def handle(self, request: _Request) -> Iterator[Framed]:
        """Act on one request: serve a file, or end the transfer (`_Done`/`ProtocolError`)."""
        kind, value = request
        if kind == "req":
            assert isinstance(value, int)
            if value > self.requested:
                self.requested = value
            yield from self.serve(value)
            if self.paced:
                self._check_skips()
        elif kind == "fin":
            append_simple(self.out, PACKET_FIN)
            yield self.take()
            raise _Done
        elif kind == "err":
            raise ProtocolError(f"error from receiver: {value}")
        else:
            raise _Done

    def catch_up(self) -> Iterator[Framed]:
        """The listing is `lead_limit` entries ahead: serve requests until the daemon has caught
        up by `LISTING_STEP`, or double the limit if it stops asking."""
        self.stats.listing_waits += 1
        target = self.lead_limit - LISTING_STEP
        while self.paced and self.lead() > target:
            request = self.pending()
            if request is None:
                # The daemon can only catch up with STATs it has: send any still held here.
                # Data alone waits for a full batch.
                if self.stats_unsent:
                    yield self.take()
                request = self.pending(LEAD_WAIT)
                if request is None:
                    self.stats.listing_timeouts += 1
                    self.lead_limit *= 2
                    if self.stats.listing_timeouts >= MAX_TIMEOUTS:
                        self.paced = False
                    if self.out:
                        yield self.take()
                    return
            yield from self.handle(request)
        self.lead_limit = LISTING_LEAD

    # -- the transfer -------------------------------------------------------------------------

    def run(self) -> Iterator[Framed]:
        """The whole transfer: listing interleaved with the files requested, then the rest.

        Raises `ProtocolError` or `OSError` after yielding an ERR packet for the daemon.
        """
        stats = self.stats
        try:
            for index, entry in enumerate(walk(self.root, self.filter)):
                if self.paced and self.lead() >= self.lead_limit:
                    yield from self.catch_up()
                if is_regular(entry.mode):
                    self.files[index] = entry
                    if not entry.linkname:  # a hard link is created, never requested
                        self.listed.append(index)
                self.listed_entries += 1
                stats.entries += 1
                append_stat(self.out, entry)
                self.stats_unsent = True
                self.packets += 1
                if self.packets >= BATCH_PACKETS:
                    yield self.take()
                while (request := self.pending()) is not None:
                    yield from self.handle(request)
            append_stat(self.out, None)
            yield self.take()
            while True:
                request = self.pending()
                if request is None:
                    if self.out:
                        yield self.take()  # never block on the daemon with packets held back
                    request = self.wait()
                yield from self.handle(request)
        except _Done:
            return
        except (ProtocolError, OSError) as exc:
            append_simple(self.out, PACKET_ERR, str(exc).encode())
            yield self.take()
            raise
