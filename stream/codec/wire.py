"""The Confluent wire format: how a Schema Registry client frames a record value.

===========  ==========================================================
bytes        meaning
===========  ==========================================================
0            magic byte, always ``0``
1-4          schema id, a 4-byte big-endian (signed) integer
5-           Protobuf only: the *message indexes*, then the payload
===========  ==========================================================

The message indexes say which message of the registered ``.proto`` file the
payload is: a path of indexes from the file's top-level messages down through
nested ones. They are written as zigzag varints, first the count, then each
index; the common path ``[0]`` (the file's first message) is the single byte
``0`` (count zero). Avro and JSON Schema payloads follow the id directly.

Unframing never raises anything but :class:`~stream.codec.parsers.ParseError`
on bad input, with a ``bad wire format: ...`` reason.

Examples
--------
>>> frame(1, b"\\x0ahello")
b'\\x00\\x00\\x00\\x00\\x01\\nhello'
>>> unframe(b"\\x00\\x00\\x00\\x00\\x07\\x00payload", protobuf=True)
Framed(schema_id=7, payload=b'payload', message_indexes=(0,))
>>> frame(7, b"p", message_indexes=(1, 2))
b'\\x00\\x00\\x00\\x00\\x07\\x04\\x02\\x04p'
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

from stream.codec.parsers import ParseError, require_payload

MAGIC = 0
_HEADER = struct.Struct(">bi")  # magic byte, schema id
#: More indexes than any sane nesting of messages; a bigger count is garbage, not a schema.
_MAX_INDEXES = 64


class Framed(NamedTuple):
    """A value taken apart: the schema id, the payload and (Protobuf) the message indexes."""

    schema_id: int
    payload: bytes
    message_indexes: tuple[int, ...] | None = None


def frame(schema_id: int, payload: bytes, *, message_indexes: Sequence[int] | None = None) -> bytes:
    """``payload`` behind the magic byte and ``schema_id`` (and the message indexes, for Protobuf)."""
    head = _HEADER.pack(MAGIC, schema_id)
    if message_indexes is None:
        return head + payload
    return head + encode_message_indexes(message_indexes) + payload


def unframe(value: bytes, *, protobuf: bool = False) -> Framed:
    """Split a framed value; ``protobuf`` reads the message indexes too.

    Raises:
        ParseError: no magic byte, a short header, or unreadable message indexes.
    """
    require_payload(value)
    if value[0] != MAGIC:
        raise ParseError(f"bad wire format: magic byte 0x{value[0]:02x}, expected 0x00")
    if len(value) < _HEADER.size:
        raise ParseError(f"bad wire format: {len(value)} bytes, shorter than the 5-byte header")
    _, schema_id = _HEADER.unpack_from(value)
    if not protobuf:
        return Framed(schema_id, value[_HEADER.size :])
    indexes, end = decode_message_indexes(value, _HEADER.size)
    return Framed(schema_id, value[end:], indexes)


def encode_message_indexes(indexes: Sequence[int]) -> bytes:
    """The zigzag-varint array of ``indexes``; ``[0]`` is the one byte ``0``.

    >>> encode_message_indexes([0]), encode_message_indexes([2]), encode_message_indexes([1, 0])
    (b'\\x00', b'\\x02\\x04', b'\\x04\\x02\\x00')
    """
    if list(indexes) == [0]:
        return b"\x00"
    return b"".join(_zigzag_varint(n) for n in [len(indexes), *indexes])


def decode_message_indexes(buf: bytes, pos: int = 0) -> tuple[tuple[int, ...], int]:
    """The message indexes at ``buf[pos:]`` and the position after them.

    Raises:
        ParseError: a truncated varint, a negative or huge count, a negative index.
    """
    count, pos = _read_zigzag(buf, pos)
    if count == 0:
        return (0,), pos
    if not 0 < count <= _MAX_INDEXES:
        raise ParseError(f"bad wire format: {count} message indexes")
    indexes = []
    for _ in range(count):
        index, pos = _read_zigzag(buf, pos)
        if index < 0:
            raise ParseError(f"bad wire format: negative message index {index}")
        indexes.append(index)
    return tuple(indexes), pos


def _zigzag_varint(n: int) -> bytes:
    # Zigzag maps signed to unsigned (0, -1, 1, -2 -> 0, 1, 2, 3), then 7 bits a byte, low first.
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    z = shift = 0
    while True:
        if pos >= len(buf):
            raise ParseError("bad wire format: message indexes cut short")
        byte = buf[pos]
        pos += 1
        z |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise ParseError("bad wire format: a message-index varint longer than 10 bytes")
