"""Damaged and hostile traces made from the committed samples, for the tests of the reader.

:func:`variants` gives ``(name, bytes)`` pairs, the same ones for the same seed: truncations, byte
flips, hostile header and end JSON, schemas that are not heapline's, column values out of range
and compression bombs. Each is a file a reader may meet; none may give a traceback.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

HEADER_KEY = b"heapline"
END_KEY = b"heapline.end"
U64_MAX = 2**64 - 1
Variant = tuple[str, bytes]


class Parts:
    """A sample trace taken apart: its schema, header, end record and rows, as written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = path.read_bytes()
        reader = ipc.open_file(pa.py_buffer(self.raw))
        self.header = json.loads(reader.schema.metadata[HEADER_KEY])
        self.end: dict[str, Any] = {}
        batches = []
        for i in range(reader.num_record_batches):
            batch, custom = reader.get_batch_with_custom_metadata(i)
            batches.append(batch)
            if custom is not None and END_KEY in custom:
                self.end = json.loads(custom[END_KEY])
        self.table = pa.Table.from_batches(batches, schema=reader.schema.remove_metadata()).combine_chunks()

    def write(self, header: bytes | dict | None = None, end: bytes | dict | None = None,
              table: pa.Table | None = None, compression: str | None = "lz4") -> bytes:
        """A trace file of these parts, any of them replaced (bytes are written as they are), in two
        batches and an empty last one holding the end record, as the recorder writes them."""
        head = self.header if header is None else header
        tail = self.end if end is None else end
        head = head if isinstance(head, bytes) else json.dumps(head).encode()
        tail = tail if isinstance(tail, bytes) else json.dumps(tail).encode()
        table = self.table if table is None else table
        schema = table.schema.with_metadata({HEADER_KEY: head})
        table = table.replace_schema_metadata(schema.metadata)
        batches = table.to_batches(max_chunksize=max(1, (len(table) + 1) // 2))
        last = batches[0].slice(0, 0) if batches else pa.RecordBatch.from_pylist([], schema=schema)
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, schema, options=ipc.IpcWriteOptions(compression=compression)) as w:
            for batch in batches:
                w.write_batch(batch)
            w.write_batch(last, custom_metadata={END_KEY: tail})
        return sink.getvalue().to_pybytes()

    def with_column(self, name: str, values: np.ndarray | pa.Array) -> bytes:
        arr = values if isinstance(values, pa.Array) else pa.array(values, type=self.table.schema.field(name).type)
        return self.write(table=self.table.set_column(self.table.schema.get_field_index(name), name, arr))


def _set(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``d`` with ``path`` (keys joined by '.') set to ``value`` (removed for ``...``)."""
    out = json.loads(json.dumps(d))
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is ...:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


def _hostile_json(base: dict[str, Any], rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Metadata that is not what heapline writes: broken JSON, other shapes, NaN, deep nesting."""
    text = json.dumps(base)
    yield "malformed", text[: len(text) // 2].encode()
    yield "null", b"null"
    yield "string", b'"a string"'
    yield "number", b"42"
    yield "list", b"[1, 2]"
    yield "empty", b""
    yield "deep-list", b"[" * 100_000 + b"]" * 100_000
    yield "deep-object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    yield "deep-inside", text[:-1].encode() + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    yield "invalid-utf8", text.encode()[:20] + b"\xff\xfe\xc3" + text.encode()[20:]
    yield "utf16", text.encode("utf-16")
    key = rng.choice(sorted(base)) if base else "x"
    yield "nan", json.dumps({**base, key: float("nan")}).encode()
    yield "infinity", json.dumps({**base, key: float("inf")}).encode()
    yield "huge-int", text[:-1].encode() + b', "x": ' + b"9" * 5000 + b"}"
    yield "huge-float", text[:-1].encode() + b', "x": 1e400}'


BAD_VALUES: list[Any] = [None, "x", -1, 0, 1.5, 2**63, 2**64, -(2**63) - 1, 1e30, True, [], {}, [1, "x"]]
HEADER_KEYS = ["format_version", "schema_version", "pid", "command", "attached", "start_ns", "start_realtime_ns",
               "clock", "tool", "machine", "machine.page_size", "machine.kernel", "machine.cpus", "backend",
               "backend.name", "backend.allocator", "backend.allocator.family", "backend.allocator.library",
               "backend.allocator.traced", "backend.allocator.reason", "backend.allocator.overhead",
               "backend.allocator.overhead.per_call_ns", "options", "snapshot", "malloc_env",
               "backend.lost_by_reason"]
END_KEYS = ["end_ns", "duration_ns", "exit_code", "stop_reason", "lost", "lost_total", "events_written", "libc",
            "libc.version", "libc.path", "backend_end", "backend_end.allocator",
            "backend_end.allocator.other_allocators", "backend_end.lost_by_reason"]


def _header_variants(p: Parts, rng: random.Random) -> Iterator[Variant]:
    for name, raw in _hostile_json(p.header, rng):
        yield f"header-{name}", p.write(header=raw)
    for name, raw in _hostile_json(p.end, rng):
        yield f"end-{name}", p.write(end=raw)
    for key in HEADER_KEYS:
        yield f"header-no-{key}", p.write(header=_set(p.header, key, ...))
        for v in rng.sample(BAD_VALUES, 2):
            yield f"header-{key}={json.dumps(v)}", p.write(header=_set(p.header, key, v))
    for key in END_KEYS:
        yield f"end-no-{key}", p.write(end=_set(p.end, key, ...))
        for v in rng.sample(BAD_VALUES, 2):
            yield f"end-{key}={json.dumps(v)}", p.write(end=_set(p.end, key, v))
    h = p.header
    for size in (0, -4096, 3, 2**40, "4096"):
        yield f"header-page_size={size!r}", p.write(header=_set(h, "machine.page_size", size))
    yield "header-start_ns=1e30", p.write(header={**h, "start_ns": 1e30})
    yield "header-start_ns=2**64", p.write(header={**h, "start_ns": 2**64})
    yield "end-before-start", p.write(end={**p.end, "end_ns": 0, "duration_ns": -(2**62)})
    yield "header-command-50MB", p.write(header={**h, "command": ["x" * 50_000_000]})
    yield "header-command-100k-args", p.write(header={**h, "command": ["a"] * 100_000})
    yield "header-command-of-ints", p.write(header={**h, "command": [1, 2, None]})
    yield "header-command-string", p.write(header={**h, "command": "rm -rf /"})
    yield "header-command-nested", p.write(header={**h, "command": [["x"]]})
    yield "header-format_version=99", p.write(header={**h, "format_version": 99})
    yield "header-format_version=1.0", p.write(header={**h, "format_version": 1.0})
    yield "header-empty-object", p.write(header={})
    yield "header-only-version", p.write(header={"format_version": 1})
    yield "header-malloc-env-garbage", p.write(header={**h, "malloc_env": {
        "MALLOC_TRIM_THRESHOLD_": "zz", "GLIBC_TUNABLES": "glibc.malloc.=;;", "MALLOC_TOP_PAD_": "9" * 40,
        "MALLOC_MMAP_THRESHOLD_": "-5"}})
    yield "header-malloc-env-numbers", p.write(header={**h, "malloc_env": {"MALLOC_TOP_PAD_": 10**30}})
    for name, snap in [
        ("string", "x"), ("empty", {}), ("mappings-string", {"mappings": "x"}),
        ("mapping-bad", {"start_brk": 0, "brk": 0, "rss": {"anon": 0}, "mappings": [{"start": "x"}]}),
        ("mapping-types", {"start_brk": 1, "brk": 2**64, "rss": {"anon": -1},
                           "mappings": [{"start": 2**64, "end": 0, "perms": "", "offset": 0, "inode": None,
                                         "path": 5}]}),
        ("huge-brk", {"start_brk": 0, "brk": 2**63, "rss": {"anon": 2**63}, "mappings": []}),
        ("huge-range", {"pid": 1, "ts_begin": 0, "ts_end": 0, "start_brk": 0, "brk": 0,
                        "rss": {"anon": 0, "file": 0, "shmem": 0, "swap": 0},
                        "mappings": [{"start": 0, "end": 2**64 - 4096, "perms": "rw-p", "offset": 0, "inode": 0,
                                      "path": ""}]}),
    ]:
        yield f"header-snapshot-{name}", p.write(header={**h, "snapshot": snap})
    yield "end-other-allocators-garbage", p.write(end=_set(p.end, "backend_end.allocator.other_allocators",
                                                           [5, {"pid": "x"}, {}]))
    yield "end-lost-garbage", p.write(end={**p.end, "lost": {"0": "x", "1": -1}, "lost_total": "many"})
    yield "end-header-keys", p.write(end={**p.end, "pid": "x", "command": 5})


def _schema_variants(p: Parts, rng: random.Random) -> Iterator[Variant]:
    t = p.table
    yield "schema-extra-column", p.write(table=t.append_column("x", pa.array(np.zeros(len(t), np.int64))))
    for name in rng.sample(t.column_names, 4):
        yield f"schema-no-{name}", p.write(table=t.drop_columns([name]))
    yield "schema-no-columns", p.write(table=pa.table({}))
    yield "schema-reversed", p.write(table=t.select(t.column_names[::-1]))
    ts = t.schema.get_field_index("ts")
    for typ in (pa.int64(), pa.float64(), pa.string(), pa.uint32()):
        yield f"schema-ts-{typ}", p.write(table=t.set_column(ts, "ts", t.column("ts").cast(typ, safe=False)))
    k = t.schema.get_field_index("kind")
    kind = t.column("kind").combine_chunks()
    yield "schema-kind-strings", p.write(table=t.set_column(k, "kind", kind.cast(pa.string())))
    yield "schema-kind-large-strings", p.write(table=t.set_column(k, "kind", kind.cast(pa.large_string())))
    yield "schema-kind-ints", p.write(table=t.set_column(k, "kind", kind.indices.cast(pa.uint16())))
    wide = pa.DictionaryArray.from_arrays(kind.indices.cast(pa.int16()), kind.dictionary)
    yield "schema-kind-int16-index", p.write(table=t.set_column(k, "kind", wide))
    bogus = pa.DictionaryArray.from_arrays(kind.indices, pa.array(["bogus"] * len(kind.dictionary)))
    yield "schema-kind-unknown-name", p.write(table=t.set_column(k, "kind", bogus))
    nulls = pa.DictionaryArray.from_arrays(pa.array([None, *kind.indices.to_pylist()[1:]], pa.int8()),
                                           kind.dictionary)
    yield "schema-kind-null", p.write(table=t.set_column(k, "kind", nulls))
    yield "schema-ts-null", p.write(table=t.set_column(ts, "ts", pa.array([None, *t.column("ts").to_pylist()[1:]],
                                                                          pa.uint64())))
    pid = t.schema.get_field_index("pid")
    yield "schema-pid-uint64", p.write(table=t.set_column(pid, "pid", t.column("pid").cast(pa.uint64())))
    yield "schema-uncompressed", p.write(compression=None)
    yield "schema-zstd", p.write(compression="zstd")


def _value_variants(p: Parts, rng: random.Random) -> Iterator[Variant]:
    t = p.table
    n = len(t)
    rows = np.array(sorted(rng.sample(range(n), min(n, 3))))

    def col(name: str) -> np.ndarray:
        return t.column(name).to_numpy().copy()

    kind = t.column("kind").combine_chunks()
    for bad in (len(kind.dictionary), 127, -1, -128):
        idx = kind.indices.to_numpy().copy()
        idx[rows] = bad
        arr = pa.DictionaryArray.from_arrays(pa.array(idx, pa.int8()), kind.dictionary, safe=False)
        yield f"values-kind-index={bad}", p.with_column("kind", arr)
    shuffled = kind.indices.to_numpy().copy()
    np.random.default_rng(rng.randrange(2**32)).shuffle(shuffled)
    yield "values-kinds-shuffled", p.with_column("kind", pa.DictionaryArray.from_arrays(pa.array(shuffled),
                                                                                          kind.dictionary))
    for name, value in (("ts", 2**63), ("ts", U64_MAX), ("dur", U64_MAX), ("dur", 2**63)):
        c = col(name)
        c[rows] = np.uint64(value)
        yield f"values-{name}={value:#x}", p.with_column(name, c)
    for byte in (7, 6, 5, 4):  # one flipped timestamp byte: 2^63 and up, centuries, years, days
        c = col("ts")
        c[rows[:1]] ^= np.uint64(1 << (8 * byte + 7))
        yield f"values-ts-flip-byte{byte}", p.with_column("ts", c)
    c = col("ts")
    yield "values-ts-zero", p.with_column("ts", np.zeros_like(c))
    yield "values-ts-reversed", p.with_column("ts", c[::-1].copy())
    for name in ("a0", "a1", "a2", "a3", "a4", "a5"):
        for value in (U64_MAX, 2**63, 2**63 - 1):
            c = col(name)
            c[rows] = np.uint64(value)
            yield f"values-{name}={value:#x}", p.with_column(name, c)
        c = col(name)
        c[:] = np.uint64(U64_MAX)
        yield f"values-{name}-all-max", p.with_column(name, c)
    for value in (-(2**63), 2**63 - 1, -1):
        c = col("ret")
        c[rows] = value
        yield f"values-ret={value}", p.with_column("ret", c)
    c = col("ret")
    c[:] = -(2**63)
    yield "values-ret-all-min", p.with_column("ret", c)
    for name, value in (("pid", 0), ("pid", 2**32 - 1), ("tid", 0), ("aux", 2**16 - 1), ("cpu", 2**32 - 1)):
        c = col(name)
        c[rows] = value
        yield f"values-{name}={value}", p.with_column(name, c)
    gen = np.random.default_rng(rng.randrange(2**32))
    for name in ("a0", "a1", "a2", "ret", "pid", "aux", "ts"):
        c = col(name)
        top = 2**63 - 1 if name == "ts" else np.iinfo(c.dtype).max
        c[:] = gen.integers(np.iinfo(c.dtype).min, top, size=n, dtype=c.dtype, endpoint=True)
        yield f"values-{name}-random", p.with_column(name, c)


def messages(raw: bytes) -> list[tuple[str, int, int, int, int]]:
    """(type, metadata offset, metadata size, body offset, body size) of each IPC message after the magic."""
    buf = pa.py_buffer(raw)
    reader = ipc.MessageReader.open_stream(pa.BufferReader(buf.slice(8)))
    out = []
    while True:
        try:
            m = reader.read_next_message()
        except StopIteration:
            break
        meta_at = raw.find(m.metadata.to_pybytes(), 8)
        body = m.body
        body_at = body.address - buf.address if body is not None and body.size else -1
        out.append((m.type, meta_at, m.metadata.size, body_at, body.size if body is not None else 0))
    return out


def _bomb_variants(p: Parts, rng: random.Random) -> Iterator[Variant]:
    """Compressed buffers whose length prefix claims far more than they hold, row counts that lie,
    and a real bomb: a column of zeros that compresses 250 to 1."""
    raw = p.raw
    rows = len(p.table) // 2 + len(p.table) % 2  # the rows of the first batch Parts.write makes
    for kind, meta_at, meta_size, body_at, _ in messages(raw):
        if body_at < 0:
            continue
        label = kind.replace(" ", "-")
        for claim in (2**40, 2**62, 2**63 - 1, -2, 0, 1):
            data = bytearray(raw)
            data[body_at : body_at + 8] = struct.pack("<q", claim)
            yield f"bomb-{label}-prefix={claim:#x}", bytes(data)
        if kind == "record batch" and rows:
            at = raw.find(struct.pack("<q", rows), meta_at, meta_at + meta_size)
            if at >= 0:
                for claim in (2**40, 2**62, rows * 1000):
                    data = bytearray(raw)
                    data[at : at + 8] = struct.pack("<q", claim)
                    yield f"bomb-rows={claim:#x}", bytes(data)
    zeros = pa.table({name: pa.array(np.zeros(2_000_000, dtype=p.table.schema.field(name).type.to_pandas_dtype()))
                      for name in p.table.column_names if name != "kind"})
    kind = p.table.column("kind").combine_chunks()
    zeros = zeros.add_column(p.table.schema.get_field_index("kind"), "kind",
                             pa.DictionaryArray.from_arrays(np.zeros(2_000_000, np.int8), kind.dictionary))
    yield "bomb-2M-zero-events", p.write(table=zeros.select(p.table.column_names).cast(p.table.schema))


def _byte_variants(p: Parts, rng: random.Random, flips: int, cuts: int) -> Iterator[Variant]:
    raw = p.raw
    size = len(raw)
    msgs = messages(raw)
    schema_end = msgs[0][1] + msgs[0][2]
    points = {0, 1, 6, 7, 8, 12, schema_end // 2, schema_end, size - 1, size - 6, size - 10, size - 16}
    for _, meta_at, meta_size, body_at, body_size in msgs:
        points |= {meta_at, meta_at + meta_size // 2}
        if body_at >= 0:
            points |= {body_at, body_at + body_size // 2, body_at + body_size}
    points |= {rng.randrange(size) for _ in range(cuts)}
    for at in sorted(x for x in points if 0 <= x < size):
        yield f"cut-{at}", raw[:at]
    for i in range(flips):
        data = bytearray(raw)
        count = 1 if i % 3 else rng.randint(2, 12)
        region = rng.choice(["any", "schema", "tail"]) if i % 2 else "any"
        lo, hi = {"any": (0, size), "schema": (8, schema_end), "tail": (max(0, size - 4096), size)}[region]
        for _ in range(count):
            data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        yield f"flip-{region}-{count}x-{i}", bytes(data)
    for i in range(max(1, flips // 8)):
        data = bytearray(raw)
        at = rng.randrange(8, size - 8)
        data[at : at + 8] = b"\xff" * 8 if i % 2 else b"\x00" * 8
        yield f"word-{at}", bytes(data)


FAMILIES: dict[str, Callable[..., Iterator[Variant]]] = {
    "header": _header_variants, "schema": _schema_variants, "values": _value_variants, "bomb": _bomb_variants,
    "bytes": _byte_variants,
}


#: the damage heapline issue 13 found, kept whatever ``per_family`` draws (names, or their beginnings)
NAMED = ("header-malformed", "header-null", "header-string", "header-deep-list", "header-invalid-utf8",
         "header-nan", "header-no-pid", "header-page_size=0", "header-page_size=-4096", "header-start_ns=1e30",
         "header-command-50MB", "end-malformed", "end-null", "end-deep-object", "schema-extra-column", "schema-no-",
         "schema-ts-int64", "schema-kind-strings", "values-kind-index=", "values-ts=0x8", "values-ts-flip-byte7",
         "bomb-record-batch-prefix=0x4", "bomb-2M-zero-events")


def variants(samples: list[Path], seed: int = 0, per_family: int | None = None, flips: int = 24, cuts: int = 6,
             families: tuple[str, ...] = tuple(FAMILIES)) -> list[Variant]:
    """The damaged variants of ``samples`` (named ``sample:what``), the same for the same ``seed``:
    every one, or ``per_family`` of each family and sample drawn at random."""
    rng = random.Random(seed)
    out: list[Variant] = []
    for path in samples:
        p = Parts(path)
        for family in families:
            gen = FAMILIES[family]
            made = list(gen(p, rng, flips, cuts) if family == "bytes" else gen(p, rng))
            if per_family is not None and len(made) > per_family:
                named = {i for i, (name, _) in enumerate(made) if name.startswith(NAMED)}
                rest = sorted(set(range(len(made))) - named)
                drawn = named | set(rng.sample(rest, max(0, min(len(rest), per_family - len(named)))))
                made = [made[i] for i in sorted(drawn)]
            out.extend((f"{path.stem}:{name}", data) for name, data in made)
    return out
