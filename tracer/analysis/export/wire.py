"""The protocol-buffer wire format, the part the exporters write: varints, length-delimited fields
(strings, bytes, nested messages, packed repeated varints) and 64-bit doubles.

A message is built as a ``bytearray`` of its fields in any order; a nested message is its own
bytes written as a length-delimited field. Negative ``int32``/``int64`` values are written as
ten-byte varints (two's complement), as protobuf does (no zigzag: the schemas here use no
``sint`` fields).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

VARINT, I64, LEN = 0, 1, 2


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint; a negative ``n`` as its 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def uint(field: int, n: int) -> bytes:
    """A varint field (int32, int64, uint32, uint64, bool, enum)."""
    return key(field, VARINT) + varint(int(n))


def length_delimited(field: int, data: bytes) -> bytes:
    return key(field, LEN) + varint(len(data)) + data


def string(field: int, text: str) -> bytes:
    return length_delimited(field, text.encode("utf-8", "surrogateescape"))


def double(field: int, x: float) -> bytes:
    return key(field, I64) + struct.pack("<d", x)


def packed(field: int, values: Iterable[int]) -> bytes:
    """A packed repeated varint field (proto3's default for repeated scalars)."""
    return length_delimited(field, b"".join(varint(int(v)) for v in values))
