"""A small, strict reader of Go ``encoding/gob`` streams.

Upstream envd (Go) keeps its contexts in a gob file; no Python package reads gob, so this module
does, for the shapes such files use: structs, slices, arrays, maps, strings, integers, bools,
floats and byte slices. Interface values and types with their own encoders (``GobEncoder``,
``BinaryMarshaler``, ``TextMarshaler``) are refused, as is anything malformed.

The wire format, as the ``encoding/gob`` package documentation describes it:

- A stream is a sequence of messages, each prefixed by its length (an unsigned integer).
- A message starts with a signed type id. A negative id ``-n`` defines type ``n``: the rest of
  the message is a ``wireType`` value. A positive id is a value of that type.
- Unsigned integers below 128 are one byte; larger ones are a byte holding the negated byte
  count, then the big-endian bytes. Signed integers are unsigned ones with the sign in bit 0
  (complemented when set). Strings and byte slices are a length then the bytes; bools are 0/1;
  floats are the byte-reversed IEEE-754 bits, as an unsigned integer.
- A struct is a sequence of (field-number delta, value) pairs ending with a zero delta; fields
  holding zero values are left out. Slices and arrays are a count then the elements; maps a
  count then key/value pairs. A top-level value that is not a struct is preceded by a zero byte.

The decoder never raises anything but :class:`GobError`, whose message is one line naming the
offset where decoding stopped.
"""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs

#: Ids the gob package predefines. 16-23 describe types themselves (``wireType`` and parts).
BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE = 1, 2, 3, 4, 5, 6, 7, 8
BASIC_NAMES = {
    BOOL: "bool", INT: "int", UINT: "uint", FLOAT: "float", BYTES: "[]byte", STRING: "string",
    COMPLEX: "complex", INTERFACE: "interface",
}
#: First id a user type may have; lower ones are predefined or reserved.
FIRST_USER_ID = 64
#: Bounds that keep a hostile file from exhausting memory or the stack.
MAX_MESSAGE = 16 << 20
MAX_DEPTH = 32


class GobError(ValueError):
    """The bytes are not a gob stream this reader accepts; ``str()`` is one line."""


@attrs.frozen
class StructType:
    """A struct: its Go name and its fields in wire order (field number = list index)."""

    name: str
    fields: tuple[tuple[str, int], ...]


@attrs.frozen
class SliceType:
    """A slice: its Go name and the type id of its elements."""

    name: str
    elem: int


@attrs.frozen
class ArrayType:
    """An array: its Go name, element type id and fixed length."""

    name: str
    elem: int
    length: int


@attrs.frozen
class MapType:
    """A map: its Go name and the type ids of its keys and values."""

    name: str
    key: int
    elem: int


#: A type a stream defined (gob's ``wireType`` without the encoder kinds, which are refused).
WireType = StructType | SliceType | ArrayType | MapType


@attrs.frozen
class GobValue:
    """One top-level value of a stream: its type id and the decoded Python value.

    Structs decode to ``dict`` keyed by Go field name, holding only the fields sent (gob leaves
    out zero values); slices and arrays to ``list``; maps to ``dict``; ``[]byte`` to ``bytes``.
    """

    type_id: int
    value: Any


@attrs.frozen
class GobStream:
    """A decoded stream: the types it defined (by id) and its top-level values."""

    types: dict[int, WireType]
    values: list[GobValue]

    def name_of(self, type_id: int) -> str:
        """A readable name of ``type_id`` for messages (``string``, ``[]types.Context``…)."""
        if type_id in BASIC_NAMES:
            return BASIC_NAMES[type_id]
        wire = self.types.get(type_id)
        return wire.name if wire is not None else f"type {type_id}"


class _Reader:
    """A cursor over bytes that reads gob's integer and string encodings."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.base = base  # offset of ``data`` in the whole stream, for messages

    def fail(self, what: str) -> GobError:
        return GobError(f"{what} at byte {self.base + self.pos}")

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail("truncated data")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self) -> int:
        first = self.take(1)[0]
        if first < 0x80:
            return first
        count = 256 - first
        if count > 8:
            raise self.fail(f"invalid unsigned integer (length byte {first:#x})")
        return int.from_bytes(self.take(count), "big")

    def sint(self) -> int:
        raw = self.uint()
        return ~(raw >> 1) if raw & 1 else raw >> 1

    def length(self, what: str) -> int:
        count = self.uint()
        if count > len(self.data) - self.pos:
            raise self.fail(f"{what} of {count} bytes runs past the end")
        return count

    def string(self) -> str:
        raw = self.take(self.length("string"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("string is not UTF-8") from None


def decode(data: bytes) -> GobStream:
    """Decode the gob stream ``data``: its type definitions and every top-level value.

    Raises :class:`GobError` for an empty, truncated or malformed stream, or one using a type
    this reader does not handle.
    """
    if not data:
        raise GobError("empty file")
    types: dict[int, WireType] = {}
    values: list[GobValue] = []
    outer = _Reader(data)
    while not outer.at_end():
        start = outer.pos
        size = outer.uint()
        if size == 0 or size > MAX_MESSAGE:
            raise GobError(f"invalid message length {size} at byte {start}")
        if size > len(data) - outer.pos:
            raise GobError(
                f"truncated data: the message at byte {start} needs {size} bytes, "
                f"{len(data) - outer.pos} remain"
            )
        message = _Reader(outer.take(size), base=outer.pos - size)
        type_id = message.sint()
        if type_id < 0:
            _define(types, -type_id, message)
        elif type_id == 0:
            raise message.fail("invalid type id 0")
        else:
            values.append(GobValue(type_id, _top_level(types, type_id, message)))
        if not message.at_end():
            raise message.fail("extra data after a message")
    if not values:
        raise GobError("no value in the stream, only type definitions")
    return GobStream(types, values)


# -- type definitions ------------------------------------------------------------------------
FieldReader = Callable[[_Reader], Any]


def _read_struct(reader: _Reader, fields: Sequence[FieldReader], what: str) -> dict[int, Any]:
    """Read a struct whose field readers are known: field number -> value, for fields sent."""
    found: dict[int, Any] = {}
    number = -1
    while True:
        delta = reader.uint()
        if delta == 0:
            return found
        number += delta
        if number >= len(fields):
            raise reader.fail(f"unknown field {number} in {what}")
        found[number] = fields[number](reader)


def _common(reader: _Reader) -> tuple[str, int]:
    got = _read_struct(reader, (_Reader.string, _Reader.sint), "CommonType")
    return got.get(0, ""), got.get(1, 0)


def _field_list(reader: _Reader) -> list[tuple[str, int]]:
    count = reader.length("field list")
    fields = []
    for _ in range(count):
        got = _read_struct(reader, (_Reader.string, _Reader.sint), "fieldType")
        fields.append((got.get(0, ""), got.get(1, 0)))
    return fields


def _own_encoder(reader: _Reader) -> Any:
    raise reader.fail("a type with its own encoder (GobEncoder or a Marshaler) is not supported")


_WIRE_TYPE: tuple[FieldReader, ...] = (
    lambda r: ("array", _read_struct(r, (_common, _Reader.sint, _Reader.sint), "arrayType")),
    lambda r: ("slice", _read_struct(r, (_common, _Reader.sint), "sliceType")),
    lambda r: ("struct", _read_struct(r, (_common, _field_list), "structType")),
    lambda r: ("map", _read_struct(r, (_common, _Reader.sint, _Reader.sint), "mapType")),
    _own_encoder,
    _own_encoder,
    _own_encoder,
)


def _define(types: dict[int, WireType], type_id: int, message: _Reader) -> None:
    if type_id < FIRST_USER_ID:
        raise message.fail(f"a definition of the predefined type id {type_id}")
    if type_id in types:
        raise message.fail(f"type id {type_id} defined twice")
    kinds = _read_struct(message, _WIRE_TYPE, "wireType")
    if len(kinds) != 1:
        raise message.fail(f"a definition of type id {type_id} with {len(kinds)} kinds")
    ((kind, parts),) = kinds.values()
    name, declared = parts.get(0, ("", 0))
    if declared not in (0, type_id):
        raise message.fail(f"the definition of type id {type_id} names id {declared}")
    wire: WireType
    if kind == "array":
        wire = ArrayType(name, parts.get(1, 0), parts.get(2, 0))
    elif kind == "slice":
        wire = SliceType(name, parts.get(1, 0))
    elif kind == "map":
        wire = MapType(name, parts.get(1, 0), parts.get(2, 0))
    else:
        wire = StructType(name, tuple(parts.get(1, [])))
    types[type_id] = wire


# -- values ----------------------------------------------------------------------------------
def _top_level(types: dict[int, WireType], type_id: int, message: _Reader) -> Any:
    if isinstance(types.get(type_id), StructType):
        return _value(types, type_id, message, 0)
    if message.uint() != 0:  # a non-struct value travels as field 0 of an implied struct
        raise message.fail("a non-zero field delta before a single value")
    return _value(types, type_id, message, 0)


def _float(reader: _Reader) -> float:
    bits = reader.uint()
    value: float = _struct.unpack(">d", bits.to_bytes(8, "little"))[0]
    return value


def _value(types: dict[int, WireType], type_id: int, reader: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise reader.fail("values nested too deeply")
    if type_id == BOOL:
        flag = reader.uint()
        if flag > 1:
            raise reader.fail(f"invalid bool {flag}")
        return flag == 1
    if type_id == INT:
        return reader.sint()
    if type_id == UINT:
        return reader.uint()
    if type_id == FLOAT:
        return _float(reader)
    if type_id == COMPLEX:
        return complex(_float(reader), _float(reader))
    if type_id == BYTES:
        return reader.take(reader.length("byte slice"))
    if type_id == STRING:
        return reader.string()
    if type_id == INTERFACE:
        raise reader.fail("interface values are not supported")
    wire = types.get(type_id)
    if wire is None:
        raise reader.fail(f"a value of undefined type id {type_id}")
    if isinstance(wire, StructType):
        found: dict[str, Any] = {}
        number = -1
        while True:
            delta = reader.uint()
            if delta == 0:
                return found
            number += delta
            if number >= len(wire.fields):
                struct = wire.name or "a struct"
                raise reader.fail(f"field number {number} of {struct} is undefined")
            field, field_type = wire.fields[number]
            found[field] = _value(types, field_type, reader, depth + 1)
    if isinstance(wire, MapType):
        count = reader.length("map")
        return {
            _hashable(_value(types, wire.key, reader, depth + 1)): _value(
                types, wire.elem, reader, depth + 1
            )
            for _ in range(count)
        }
    count = reader.length("slice")  # every element takes at least one byte
    if isinstance(wire, ArrayType) and count != wire.length:
        raise reader.fail(f"array of {count} elements, {wire.name} has {wire.length}")
    return [_value(types, wire.elem, reader, depth + 1) for _ in range(count)]


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(item) for item in key)
    if isinstance(key, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in key.items()))
    return key
