"""Pacing of the FileSync listing, against a peer that receives the way buildkitd does.

The peer mimics fsutil's receiver: one thread reads packets in order and hands STATs to a
"creating" thread through a bounded queue of 256 (the daemon's buffered channels); that thread
takes its time per entry and sends a REQ for each regular file it reaches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from envd_core.buildkit._pb import fsutil_types_pb2 as fs
from envd_core.buildkit.session import LocalDir, Session, sender


def _tree(root: Path, files: int) -> Path:
    for i in range(files):
        d = root / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(b"x" * (i % 300))
    return root


def _receive(address: str, request_every: int = 1, per_entry: float = 0.0002) -> dict[str, Any]:
    """Run a receiver like the daemon's; returns how far the listing ran ahead of its REQs."""
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    created: queue.Queue[Any] = queue.Queue(maxsize=256)
    state = {"requested": -1, "max_lead": 0, "files": 0, "data": 0, "max_behind": 0}
    # STATs received since each file's REQ was sent, until its first DATA arrives.
    waiting: dict[int, int] = {}
    lock = threading.Lock()

    def requests() -> Iterator[Any]:
        while (item := out.get()) is not None:
            yield item

    def creator() -> None:  # the daemon's file-creating goroutine
        while (item := created.get()) is not None:
            index, regular = item
            time.sleep(per_entry)
            if regular:
                state["files"] += 1
                if state["files"] % request_every == 0:
                    state["requested"] = index
                    with lock:
                        waiting[index] = 0
                    out.put(fs.Packet(type=fs.Packet.PACKET_REQ, ID=index))
        out.put(fs.Packet(type=fs.Packet.PACKET_FIN))

    channel = grpc.insecure_channel(address)
    try:
        call = channel.stream_stream(
            "/moby.filesync.v1.FileSync/DiffCopy",
            request_serializer=fs.Packet.SerializeToString,
            response_deserializer=fs.Packet.FromString,
        )(requests(), metadata=(("dir-name", "context"),), timeout=60)
        worker = threading.Thread(target=creator, daemon=True)
        worker.start()
        index = 0
        for packet in call:
            if packet.type == fs.Packet.PACKET_STAT:
                if not packet.HasField("stat"):
                    created.put(None)
                    continue
                with lock:
                    for key in waiting:
                        waiting[key] += 1
                created.put((index, packet.stat.mode & 0xFFF00000 == 0))  # blocks when full
                index += 1
            elif packet.type == fs.Packet.PACKET_DATA:
                state["data"] += len(packet.data)
                with lock:
                    behind = waiting.pop(packet.ID, None)
                if behind is not None:
                    state["max_behind"] = max(state["max_behind"], behind)
            elif packet.type == fs.Packet.PACKET_FIN:
                break
        out.put(None)
        worker.join(10)
    finally:
        channel.close()
    return state


def test_listing_stays_close_to_the_daemons_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing far ahead of the daemon parks every DATA packet behind STATs it cannot take."""
    # A loaded machine can hold this peer's requests back past the 25 ms after which pacing
    # widens; that path has its own test, this one is about the paced listing.
    monkeypatch.setattr(sender, "LEAD_WAIT", 2.0)
    root = _tree(tmp_path / "ctx", 1200)
    with Session(shared_key="k", local_dirs={"context": LocalDir(root)}) as session:
        state = _receive(session.serve_local(), per_entry=0.001)
    [transfer] = session.transfers
    assert state["files"] == 1200 == transfer.files_requested
    assert state["data"] == sum(i % 300 for i in range(1200))
    # A file's data comes at most a lead's worth of STATs (plus one batch on its way) after
    # the daemon asked for it. Unpaced, the whole listing (1,220 entries) went out first.
    assert state["max_behind"] <= sender.LISTING_LEAD + sender.BATCH_PACKETS
    assert transfer.listing_waits > 0
    assert transfer.listing_timeouts == 0


def test_listing_nobody_requests_from_costs_a_few_waits(tmp_path: Path) -> None:
    """An incremental upload of an unchanged tree: no REQ ever comes; the lead doubles."""
    root = _tree(tmp_path / "ctx", 1000)
    with Session(shared_key="k", local_dirs={"context": LocalDir(root)}) as session:
        state = _receive(session.serve_local(), request_every=10**9, per_entry=0)
    assert state["files"] == 1000  # every file reached, none requested
    [transfer] = session.transfers
    # Doubled twice, then pacing ends: at most MAX_TIMEOUTS waits.
    assert 1 <= transfer.listing_timeouts <= sender.MAX_TIMEOUTS


def test_daemon_skipping_files_turns_pacing_off(tmp_path: Path) -> None:
    """REQs that pass over files (only changed ones requested) end the pacing."""
    from envd_core.buildkit.session.filesync import TransferStats
    from envd_core.buildkit.session.walk import Entry, Filter

    stats = TransferStats("context")
    paced = sender.Sender(str(tmp_path), Filter.build(), None, stats)  # type: ignore[arg-type]
    entry = Entry(path="f", mode=0, size=0, mtime_ns=0)
    paced.files = dict.fromkeys(range(3000), entry)
    paced.listed = list(range(3000))
    for i in range(6, 3000, 7):  # every seventh file requested, the others never
        paced.requested = i
        del paced.files[i]
        paced._check_skips()
        assert paced.paced == (i <= sender.SKIP_MARGIN)


def test_skipping_daemon_end_to_end(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", 2000)
    with Session(shared_key="k", local_dirs={"context": LocalDir(root)}) as session:
        state = _receive(session.serve_local(), request_every=7, per_entry=0)
    [transfer] = session.transfers
    assert transfer.files_requested == 2000 // 7 == state["files"] // 7


def test_pacing_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "LISTING_LEAD", 0)
    root = _tree(tmp_path / "ctx", 300)
    with Session(shared_key="k", local_dirs={"context": LocalDir(root)}) as session:
        state = _receive(session.serve_local())
    assert state["files"] == 300
    assert session.transfers[0].listing_waits == 0
