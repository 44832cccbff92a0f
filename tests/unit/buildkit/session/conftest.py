"""A real gRPC peer for the session server: it plays the daemon's side of each protocol."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from envd_core.buildkit._pb import fsutil_types_pb2 as fs


class DaemonSide:
    """Calls the session's services the way buildkitd does, over the session's own socket."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)

    def close(self) -> None:
        self.channel.close()

    def fetch_dir(
        self, name: str, metadata: list[tuple[str, str]] | None = None, want: Any = None
    ) -> tuple[list[Any], dict[str, bytes]]:
        """Run the fsutil *receiver*: list, request regular files (all, or those ``want``
        accepts), collect their bytes, exchange FIN. Returns (stats, path -> data)."""
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def requests() -> Iterator[Any]:
            while True:
                item = out.get()
                if item is None:
                    return
                yield item

        call = self.channel.stream_stream(
            "/moby.filesync.v1.FileSync/DiffCopy",
            request_serializer=fs.Packet.SerializeToString,
            response_deserializer=fs.Packet.FromString,
        )(requests(), metadata=[("dir-name", name), *(metadata or [])])
        stats: list[Any] = []
        pending: dict[int, str] = {}
        data: dict[str, bytearray] = {}
        listing_done = False
        try:
            for packet in call:
                if packet.type == fs.Packet.PACKET_STAT:
                    if not packet.HasField("stat"):
                        listing_done = True
                    else:
                        index = len(stats)
                        stats.append(packet.stat)
                        regular = packet.stat.mode & 0xFFF00000 == 0 and not packet.stat.linkname
                        if regular and (want is None or want(packet.stat.path)):
                            pending[index] = packet.stat.path
                            data[packet.stat.path] = bytearray()
                            out.put(fs.Packet(type=fs.Packet.PACKET_REQ, ID=index))
                elif packet.type == fs.Packet.PACKET_DATA:
                    path = pending[packet.ID]
                    if packet.data:
                        data[path] += packet.data
                    else:
                        del pending[packet.ID]
                elif packet.type == fs.Packet.PACKET_FIN:
                    break
                elif packet.type == fs.Packet.PACKET_ERR:
                    raise AssertionError(packet.data.decode())
                if listing_done and not pending:
                    out.put(fs.Packet(type=fs.Packet.PACKET_FIN))
                    listing_done = False  # FIN sent once
        finally:
            out.put(None)
        return stats, {k: bytes(v) for k, v in data.items()}


@pytest.fixture
def daemon_side() -> Iterator[Any]:
    peers: list[DaemonSide] = []

    def connect(address: str) -> DaemonSide:
        peer = DaemonSide(address)
        peers.append(peer)
        return peer

    yield connect
    for peer in peers:
        peer.close()


