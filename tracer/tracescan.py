"""The messages of a trace file, read without decoding a batch: the schema with its header, and
what each batch claims to hold, checked against what the file can hold before anything is
decompressed (an LZ4 length prefix is what Arrow allocates). The IPC format is Arrow's
(format/Message.fbs and File.fbs); the few fields needed are read from the flatbuffers directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from tracer.events import EVENT_DTYPE
from tracer.tracecheck import Damaged, check_schema, header

#: LZ4 makes at most about 255 bytes of one: no batch of a real file holds more
MAX_EXPANSION = 256


@dataclass
class Scan:
    """What the messages of a trace file hold, as far as they can be read."""

    header: dict[str, Any]
    readable_end: int  # the file offset after the last whole message (the schema's at least)
    eos: bool  # the messages end with the end-of-stream marker (a footer follows)
    batches: int = 0  # record batches among the messages
    rows: int = 0  # their rows together


def _table(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(table position, vtable position, vtable size) of the flatbuffer table at ``pos``."""
    (soff,) = struct.unpack_from("<i", buf, pos)
    vt = pos - soff
    if not 0 <= vt <= len(buf) - 4:
        raise struct.error("vtable outside the buffer")
    (vsize,) = struct.unpack_from("<H", buf, vt)
    return pos, vt, vsize


def _field(buf: bytes, table: tuple[int, int, int], i: int) -> int | None:
    """The position of field ``i`` of ``table``, None when absent."""
    pos, vt, vsize = table
    if 4 + 2 * i + 2 > vsize:
        return None
    (off,) = struct.unpack_from("<H", buf, vt + 4 + 2 * i)
    return pos + off if off else None


def _deref(buf: bytes, at: int) -> int:
    (off,) = struct.unpack_from("<I", buf, at)
    return at + off


def _record_batch(buf: bytes, at: int) -> tuple[int, list[tuple[int, int]], bool]:
    """(rows, [(offset, length)] of its buffers, compressed) of the RecordBatch table at ``at``
    (Arrow's Message.fbs: RecordBatch { length, nodes, buffers, compression })."""
    rb = _table(buf, at)
    f = _field(buf, rb, 0)
    rows = struct.unpack_from("<q", buf, f)[0] if f is not None else 0
    f = _field(buf, rb, 2)
    buffers = []
    if f is not None:
        vec = _deref(buf, f)
        (n,) = struct.unpack_from("<I", buf, vec)
        if n > (len(buf) - vec) // 16:
            raise struct.error("vector outside the buffer")
        buffers = [struct.unpack_from("<qq", buf, vec + 4 + 16 * k) for k in range(n)]
    return rows, buffers, _field(buf, rb, 3) is not None


def _message(meta: bytes) -> tuple[int, int, list[tuple[int, int]], bool]:
    """(header type, rows, buffers, compressed) of one IPC message's flatbuffer (Message { version,
    header_type, header, ... }: header type 2 is a DictionaryBatch { id, data }, 3 a RecordBatch)."""
    msg = _table(meta, _deref(meta, 0))
    f = _field(meta, msg, 1)
    kind = meta[f] if f is not None else 0
    f = _field(meta, msg, 2)
    if f is None or kind not in (2, 3):
        return kind, 0, [], False
    at = _deref(meta, f)
    if kind == 2:
        f = _field(meta, _table(meta, at), 1)
        if f is None:
            return kind, 0, [], False
        at = _deref(meta, f)
    return (kind, *_record_batch(meta, at))


def _batch(m: ipc.Message, found: Scan, size: int) -> None:
    """A dictionary or record batch message: its rows, and what its compressed buffers claim to hold."""
    try:
        kind, rows, buffers, compressed = _message(m.metadata.to_pybytes())
    except (struct.error, IndexError):
        raise Damaged("the metadata of one of its batches is damaged") from None
    if kind not in (2, 3):
        raise Damaged(f"it holds a {m.type} message among its batches")
    if rows < 0:
        raise Damaged(f"one of its batches claims {rows} rows")
    if kind == 2:
        if rows > 256:
            raise Damaged(f"its kind dictionary claims {rows:,} entries")
        bound = 64 * rows + 1024  # the names of the kinds and their offsets
    else:
        found.batches += 1
        found.rows += rows
        if found.rows * EVENT_DTYPE.itemsize > MAX_EXPANSION * size:
            raise Damaged(f"its batches claim {found.rows:,} events, more than a file of {size:,} bytes can hold")
        bound = 8 * rows + 64  # no column is wider than 8 bytes
    body = m.body
    room = body.size if body is not None else 0
    for offset, length in buffers:
        if offset < 0 or length < 0 or offset + length > room:
            raise Damaged("the buffers of one of its batches lie outside it")
        if compressed and length >= 8:
            (claim,) = struct.unpack_from("<q", body.slice(offset, 8).to_pybytes())
            if claim != -1 and not 0 <= claim <= bound:
                raise Damaged(f"a compressed buffer claims {claim:,} bytes where its batch holds at most {bound:,}")


def scan(buf: pa.Buffer, expected: pa.Schema, header_key: bytes, versions: tuple[int, ...]) -> Scan:
    """Read the messages of the whole trace file in ``buf`` (its first 8 bytes the file magic)
    without decoding a batch: the header and the schema, checked, and how far whole messages go."""
    size = buf.size
    src = pa.BufferReader(buf.slice(8))
    reader = ipc.MessageReader.open_stream(src)
    try:
        first = reader.read_next_message()
        got = ipc.read_schema(first) if first.type == "schema" else None
    except StopIteration:
        raise Damaged("it holds no schema") from None
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        raise Damaged(f"its schema is damaged ({size:,} bytes)") from None
    if got is None:
        raise Damaged(f"it starts with a {first.type} message, not its schema")
    meta = got.metadata or {}
    if header_key not in meta:
        raise Damaged("it is an Arrow file but has no heapline header")
    found = Scan(header(meta[header_key], versions), 8 + src.tell(), False)
    check_schema(got, expected)
    while True:
        try:
            m = reader.read_next_message()
        except StopIteration:
            found.eos = True
            return found
        except (pa.ArrowException, OSError):
            return found  # a torn message: where a recording that was killed stopped writing
        _batch(m, found, size)
        found.readable_end = 8 + src.tell()


def footer_batches(buf: pa.Buffer, magic: bytes) -> int | None:
    """How many record batches the file's footer lists (File.fbs: Footer { version, schema,
    dictionaries, recordBatches }); None when there is no readable footer (a recording killed,
    or a file cut short)."""
    size = buf.size
    if size < 8 + 10 or buf.slice(size - len(magic)).to_pybytes() != magic:
        return None
    (length,) = struct.unpack("<i", buf.slice(size - 10, 4).to_pybytes())
    if not 0 < length <= size - 18:
        return None
    meta = buf.slice(size - 10 - length, length).to_pybytes()
    try:
        f = _field(meta, _table(meta, _deref(meta, 0)), 3)
        return struct.unpack_from("<I", meta, _deref(meta, f))[0] if f is not None else 0
    except (struct.error, IndexError):
        return None
