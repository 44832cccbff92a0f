"""A minimal gob *writer* for tests: it re-creates upstream envd's context file byte for byte.

Only tests use it: to build variants of a real upstream file that upstream itself cannot write
(a field a future upstream might add, a wrong field type). ``test_writer_reproduces_upstream``
checks that it writes exactly the bytes the real upstream binary wrote, so its variants differ
from real files only where a test means them to.
"""

from __future__ import annotations

from collections.abc import Sequence

STRING = 6


def uint(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([256 - len(raw)]) + raw


def sint(i: int) -> bytes:
    return uint(i << 1 if i >= 0 else (~i << 1) | 1)


def string(text: str) -> bytes:
    raw = text.encode()
    return uint(len(raw)) + raw


def struct(fields: Sequence[tuple[int, bytes]]) -> bytes:
    """A struct value from (field number, encoded value) pairs in increasing order."""
    out, last = b"", -1
    for number, value in fields:
        out += uint(number - last) + value
        last = number
    return out + b"\x00"


def common(name: str, type_id: int) -> bytes:
    return struct([(0, string(name)), (1, sint(type_id))])


def define_struct(type_id: int, name: str, fields: Sequence[tuple[str, int]]) -> bytes:
    field_list = uint(len(fields)) + b"".join(
        struct([(0, string(f)), (1, sint(t))]) for f, t in fields
    )
    body = struct([(0, common(name, type_id)), (1, field_list)])
    return message(sint(-type_id) + struct([(2, body)]))


def define_slice(type_id: int, name: str, elem: int) -> bytes:
    body = struct([(0, common(name, type_id)), (1, sint(elem))])
    return message(sint(-type_id) + struct([(1, body)]))


def message(payload: bytes) -> bytes:
    return uint(len(payload)) + payload


CONTEXT_FIELDS = ["Name", "Builder", "BuilderAddress", "Runner", "RunnerAddress"]


def envd_contexts(
    current: str,
    contexts: Sequence[dict[str, str]],
    *,
    context_fields: Sequence[tuple[str, int]] | None = None,
) -> bytes:
    """An upstream ``contexts`` file: types as upstream v1.3.4 defines them, unless overridden."""
    fields = list(context_fields or [(f, STRING) for f in CONTEXT_FIELDS])
    names = [f for f, _ in fields]
    out = define_struct(64, "EnvdContext", [("Current", STRING), ("Contexts", 66)])
    out += define_slice(66, "[]types.Context", 65)
    out += define_struct(65, "Context", fields)
    elements = uint(len(contexts)) + b"".join(
        struct([(names.index(k), string(v)) for k, v in sorted(
            entry.items(), key=lambda kv: names.index(kv[0])) if v])
        for entry in contexts
    )
    top = [(0, string(current))] if current else []
    if contexts:
        top.append((1, elements))
    return out + message(sint(64) + struct(top))
