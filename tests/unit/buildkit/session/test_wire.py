"""The hand-written fsutil Packet encoder must produce what protobuf itself serializes."""

from __future__ import annotations

import struct

import pytest

from envd_core.buildkit._pb import fsutil_types_pb2 as fs
from envd_core.buildkit.session import wire
from envd_core.buildkit.session.walk import MODE_DIR, MODE_SYMLINK, Entry


def _messages(buf: bytes | bytearray) -> list[bytes]:
    """Split gRPC length-prefixed frames."""
    out = []
    pos = 0
    while pos < len(buf):
        flag, length = struct.unpack_from(">BI", buf, pos)
        assert flag == 0
        out.append(bytes(buf[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    assert pos == len(buf)
    return out


ENTRIES = [
    Entry(path="a", mode=0o644, size=0, mtime_ns=0),
    Entry(path="dir", mode=MODE_DIR | 0o755, size=0, mtime_ns=1_700_000_000_123_456_789),
    Entry(path="dir/link", mode=MODE_SYMLINK | 0o777, size=6, mtime_ns=5, linkname="../a/b"),
    Entry(path="dir/dev", mode=0o600 | (1 << 26), size=0, mtime_ns=7, devmajor=8, devminor=300),
    Entry(path="hard", mode=0o600, size=0, mtime_ns=1, linkname="a"),
    Entry(path="big", mode=0o4755, size=(1 << 40) + 3, mtime_ns=-1_000_000_001),  # pre-1970
    Entry(path="ünï/cöde", mode=0o644, size=127, mtime_ns=128),
    Entry(path="x" * 300, mode=0o644, size=16384, mtime_ns=2**62),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.path[:12])
def test_stat_packet_matches_protobuf(entry: Entry) -> None:
    buf = bytearray()
    wire.append_stat(buf, entry)
    expected = fs.Packet(
        type=fs.Packet.PACKET_STAT,
        stat=fs.Stat(
            path=entry.path,
            mode=entry.mode,
            size=entry.size,
            mod_time=entry.mtime_ns,
            linkname=entry.linkname,
            devmajor=entry.devmajor,
            devminor=entry.devminor,
        ),
    )
    (got,) = _messages(buf)
    assert got == expected.SerializeToString()
    assert fs.Packet.FromString(got) == expected


def test_end_of_listing_is_an_empty_stat() -> None:
    buf = bytearray()
    wire.append_stat(buf, None)
    assert bytes(buf) == b"\x00\x00\x00\x00\x00"
    assert _messages(buf) == [fs.Packet(type=fs.Packet.PACKET_STAT).SerializeToString()]


@pytest.mark.parametrize("file_id", [0, 1, 127, 128, 70_000, 2**32 - 1])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_385, 1 << 20])
def test_data_packet_matches_protobuf(file_id: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    buf = bytearray()
    wire.append_data(buf, file_id, memoryview(data))
    (got,) = _messages(buf)
    expected = fs.Packet(type=fs.Packet.PACKET_DATA, ID=file_id, data=data)
    assert got == expected.SerializeToString()


def test_fin_and_err_and_several_packets_in_one_buffer() -> None:
    buf = bytearray()
    wire.append_simple(buf, wire.PACKET_FIN)
    wire.append_simple(buf, wire.PACKET_ERR, b"boom")
    wire.append_data(buf, 3, b"xy")
    assert _messages(buf) == [
        fs.Packet(type=fs.Packet.PACKET_FIN).SerializeToString(),
        fs.Packet(type=fs.Packet.PACKET_ERR, data=b"boom").SerializeToString(),
        fs.Packet(type=fs.Packet.PACKET_DATA, ID=3, data=b"xy").SerializeToString(),
    ]
    assert (wire.PACKET_STAT, wire.PACKET_REQ, wire.PACKET_DATA) == (
        fs.Packet.PACKET_STAT,
        fs.Packet.PACKET_REQ,
        fs.Packet.PACKET_DATA,
    )
