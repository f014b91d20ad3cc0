"""Thrift's compact protocol, generically: decode a struct to values, encode it back.

Enough of the protocol to read and rewrite a Parquet footer (``FileMetaData``)
without knowing its schema: every field is kept, in order, with its wire type,
so ``encode(decode(b)) == b`` for what Thrift's own C++ encoder writes (tested
on pyarrow's footers). ``_stitch`` changes a few integer fields and re-encodes.

Source: the Thrift compact protocol specification,
https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
(field header = 4-bit id delta + 4-bit type; ints are zigzag varints; a list
header is a 4-bit size (15: a varint follows) + 4-bit element type).

Shapes:
- a struct is a ``list[Field]`` in wire order;
- a list or set is ``Sequence(elem_type, values)``;
- a map is ``Mapping(key_type, value_type, pairs)``;
- BOOL fields are ``bool``; BYTE/I16/I32/I64 ``int``; DOUBLE the raw 8 bytes;
  BINARY ``bytes``; STRUCT a ``list[Field]``.

Errors: ``ThriftError`` for truncated input, an unknown type, or nesting
deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
INTEGERS = (I16, I32, I64)
# Parquet footers nest 4-5 deep; this only bounds hostile input.
MAX_DEPTH = 64


class ThriftError(ValueError):
    """Bytes that are not a compact-protocol struct we can re-encode."""


class Field(NamedTuple):
    id: int
    type: int  # TRUE or FALSE for a bool field (the value is then a bool too)
    value: Any


class Sequence(NamedTuple):
    elem_type: int
    values: list[Any]


class Mapping(NamedTuple):
    key_type: int
    value_type: int
    pairs: list[tuple[Any, Any]]


def decode(data: bytes | memoryview) -> list[Field]:
    """The struct at the start of ``data`` (trailing bytes are ignored)."""
    return decode_with_length(data)[0]


def decode_with_length(data: bytes | memoryview) -> tuple[list[Field], int]:
    """The struct at the start of ``data`` and how many bytes it took."""
    reader = _Reader(bytes(data))
    return reader.struct(0), reader.pos


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


def get(fields: list[Field], field_id: int) -> Field | None:
    """The field with ``field_id``, None when absent."""
    for field in fields:
        if field.id == field_id:
            return field
    return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ThriftError("truncated footer")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ThriftError("truncated footer")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def struct(self, depth: int) -> list[Field]:
        if depth > MAX_DEPTH:
            raise ThriftError("structs nested too deep")
        fields: list[Field] = []
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == STOP:
                return fields
            delta = head >> 4
            field_id = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields.append(Field(field_id, kind, kind == TRUE))
            else:
                fields.append(Field(field_id, kind, self.value(kind, depth)))
            last = field_id

    def value(self, kind: int, depth: int) -> Any:
        if kind in (TRUE, FALSE):  # a bool inside a list, set or map: one byte
            return self.byte() == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in INTEGERS:
            return self.zigzag()
        if kind == DOUBLE:
            return self.take(8)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            elem = head & 0x0F
            return Sequence(elem, [self.value(elem, depth + 1) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if not size:
                return Mapping(0, 0, [])
            types = self.byte()
            kt, vt = types >> 4, types & 0x0F
            pairs = [(self.value(kt, depth + 1), self.value(vt, depth + 1)) for _ in range(size)]
            return Mapping(kt, vt, pairs)
        if kind == STRUCT:
            return self.struct(depth + 1)
        raise ThriftError(f"unknown compact type {kind}")


def _varint(out: bytearray, n: int) -> None:
    while True:
        if n < 0x80:
            out.append(n)
            return
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)


def _write_struct(out: bytearray, fields: list[Field]) -> None:
    last = 0
    for field in fields:
        kind = field.type
        if kind in (TRUE, FALSE):
            kind = TRUE if field.value else FALSE
        delta = field.id - last
        if 0 < delta <= 15:
            out.append((delta << 4) | kind)
        else:
            out.append(kind)
            _zigzag(out, field.id)
        if kind not in (TRUE, FALSE):
            _write_value(out, kind, field.value)
        last = field.id
    out.append(STOP)


def _write_value(out: bytearray, kind: int, value: Any) -> None:
    if kind in (TRUE, FALSE):
        out.append(TRUE if value else FALSE)
    elif kind == BYTE:
        out.append(value & 0xFF)
    elif kind in INTEGERS:
        _zigzag(out, value)
    elif kind == DOUBLE:
        out += value
    elif kind == BINARY:
        _varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        seq: Sequence = value
        if len(seq.values) < 15:
            out.append((len(seq.values) << 4) | seq.elem_type)
        else:
            out.append(0xF0 | seq.elem_type)
            _varint(out, len(seq.values))
        for item in seq.values:
            _write_value(out, seq.elem_type, item)
    elif kind == MAP:
        mapping: Mapping = value
        _varint(out, len(mapping.pairs))
        if mapping.pairs:
            out.append((mapping.key_type << 4) | mapping.value_type)
            for k, v in mapping.pairs:
                _write_value(out, mapping.key_type, k)
                _write_value(out, mapping.value_type, v)
    elif kind == STRUCT:
        _write_struct(out, value)
    else:
        raise ThriftError(f"unknown compact type {kind}")
