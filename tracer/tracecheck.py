"""What a trace file may hold: the one place its header, end record, schema, message sizes and
column values are checked, before anything else reads them.

A trace comes from a recording, or from anywhere: every byte of it is hostile until checked here.
The header and the end record must be UTF-8 JSON objects of bounded size, depth and string length
whose known keys have the types and ranges of :data:`FIELDS`; the schema must be the event
schema; no compressed buffer may claim more bytes than its batch's rows fill, nor the batches more
rows than the file could hold (:mod:`tracer.tracescan`: nothing is decompressed before the sizes fit);
``kind`` must name kinds, no value may be empty, and the times and the addresses of what a process
really mapped must be ones a recording can hold (:func:`values`). Anything else raises
:class:`Damaged` with a clause saying what is wrong, which the reader makes its one sentence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from tracer.events import KIND_NAMES, NAME_KINDS, Kind

if TYPE_CHECKING:
    from tracer.columns import Columns

#: a header or end record is a few kB; an attach snapshot of a process at the kernel's default
#: vm.max_map_count (65,530 mappings) about 10 MB
MAX_META_BYTES = 32 << 20
#: the longest string in them: the kernel's limit on one argument of execve (MAX_ARG_STRLEN)
MAX_STRING = 128 << 10
#: the arguments of a command together: execve takes at most 6 MiB (3/4 of _STK_LIM)
MAX_COMMAND_BYTES = 6 << 20
MAX_DEPTH = 32
#: no Linux address space reaches further (x86-64 with 5-level page tables: 2^56 for user space)
ADDRESS_SPACE = 1 << 57
ERRNO_MAX = 4095
I64, U64, U32 = 2**63 - 1, 2**64 - 1, 2**32 - 1


class Damaged(ValueError):
    """The file is not what heapline writes; the message says how (a clause without the path)."""


class OtherVersion(Exception):
    """A heapline trace of a format version this heapline does not read."""

    def __init__(self, version: Any) -> None:
        super().__init__(version)
        self.version = version


# ---- the header and the end record --------------------------------------------------------------

Rule = Callable[[Any, str], None]  # raises Damaged naming the key when the value does not fit


def _what(v: Any) -> str:
    return "null" if v is None else {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                                     list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def integer(lo: int, hi: int) -> Rule:
    def check(v: Any, key: str) -> None:
        if type(v) is not int:
            raise Damaged(f"{key} is {_what(v)}, not an integer")
        if not lo <= v <= hi:
            raise Damaged(f"{key} is {v if abs(v) < 10**20 else 'a huge number'}, outside [{lo}, {hi}]")
    return check


def number(lo: float, hi: float) -> Rule:
    def check(v: Any, key: str) -> None:
        if type(v) not in (int, float):
            raise Damaged(f"{key} is {_what(v)}, not a number")
        if not lo <= v <= hi:
            raise Damaged(f"{key} is {v:.6g}, outside [{lo:g}, {hi:g}]")
    return check


def string(v: Any, key: str) -> None:
    if type(v) is not str:
        raise Damaged(f"{key} is {_what(v)}, not a string")


def boolean(v: Any, key: str) -> None:
    if type(v) is not bool:
        raise Damaged(f"{key} is {_what(v)}, not true or false")


def optional(rule: Rule) -> Rule:
    def check(v: Any, key: str) -> None:
        if v is not None:
            rule(v, key)
    return check


def listing(rule: Rule) -> Rule:
    def check(v: Any, key: str) -> None:
        if type(v) is not list:
            raise Damaged(f"{key} is {_what(v)}, not a list")
        for i, item in enumerate(v):
            rule(item, f"{key}[{i}]")
    return check


def obj(fields: dict[str, Rule] | None = None, values: Rule | None = None, required: Iterable[str] = ()) -> Rule:
    """An object whose keys in ``fields`` follow their rules and the others ``values`` (any, when None)."""
    fields, required = fields or {}, tuple(required)

    def check(v: Any, key: str) -> None:
        if type(v) is not dict:
            raise Damaged(f"{key} is {_what(v)}, not an object")
        for name in required:
            if name not in v:
                raise Damaged(f"{key} has no {name}")
        for name, item in v.items():
            rule = fields.get(name, values)
            if rule is not None:
                rule(item, f"{key}.{name}")
    return check


def _page_size(v: Any, key: str) -> None:
    integer(512, 1 << 30)(v, key)
    if v & (v - 1):
        raise Damaged(f"{key} is {v}, not a power of two")


def _command(v: Any, key: str) -> None:
    listing(string)(v, key)
    if sum(len(a) for a in v) > MAX_COMMAND_BYTES:
        raise Damaged(f"{key} is longer than the {MAX_COMMAND_BYTES >> 20} MiB execve takes")


def _mapping(v: Any, key: str) -> None:
    obj({"start": integer(0, U64), "end": integer(0, U64), "perms": string, "offset": integer(0, U64),
         "inode": integer(0, U64), "path": string}, required=("start", "end", "perms", "inode", "path"))(v, key)
    if v["end"] < v["start"]:
        raise Damaged(f"{key} ends before it starts")
    if v["end"] > ADDRESS_SPACE and not v["path"].startswith("[vsyscall"):  # the one mapping above user space
        raise Damaged(f"{key} lies beyond any address space (2^57 bytes)")
    if len(v["perms"]) != 4:
        raise Damaged(f"{key}.perms is not four letters like rw-p")


NS = integer(0, I64)
ADDRESS = integer(0, ADDRESS_SPACE)
BYTES = integer(0, ADDRESS_SPACE)
COUNT = integer(0, I64)
PID = integer(0, U32)
TEXT = optional(string)
ALLOCATOR = obj({
    "traced": optional(boolean), "library": TEXT, "family": TEXT, "build_id": TEXT, "reason": TEXT,
    "overhead": optional(obj({"per_call_ns": optional(number(0, 1e12)), "pairs": optional(COUNT)})),
    "other_allocators": optional(listing(obj({"pid": PID, "program": TEXT, "library": TEXT, "family": TEXT},
                                             required=("pid",)))),
})
BACKEND = obj({"name": TEXT, "allocator": optional(ALLOCATOR), "lost_by_reason": optional(obj(values=COUNT))})
SNAPSHOT = obj({"pid": optional(PID), "ts_begin": optional(NS), "ts_end": optional(NS), "start_brk": ADDRESS,
                "brk": ADDRESS, "rss": obj(values=BYTES, required=("anon", "file", "shmem")),
                "mappings": listing(_mapping)}, required=("start_brk", "brk", "rss", "mappings"))
#: the keys heapline writes and reads, in the header or the end record, and what their values may be
FIELDS: dict[str, Rule] = {
    "format_version": integer(0, I64),
    "schema_version": integer(0, I64),
    "tool": TEXT,
    "command": _command,
    "pid": integer(1, U32),
    "attached": boolean,
    "start_ns": NS,
    "start_realtime_ns": optional(NS),
    "clock": TEXT,
    "machine": obj({"kernel": TEXT, "machine": TEXT, "page_size": _page_size, "cpus": optional(integer(0, 1 << 20))}),
    "backend": BACKEND,
    "backend_end": optional(BACKEND),
    "options": optional(obj()),
    "snapshot": optional(SNAPSHOT),
    "malloc_env": optional(obj(values=string)),
    "end_ns": NS,
    "duration_ns": optional(NS),
    "exit_code": optional(integer(-(2**31), 2**31 - 1)),
    "stop_reason": TEXT,
    "lost": optional(obj(values=COUNT)),
    "lost_total": optional(COUNT),
    "events_written": optional(COUNT),
    "collector_cpu_s": optional(number(0, 1e12)),
    "writer_cpu_s": optional(number(0, 1e12)),
    "libc": optional(obj({"path": TEXT, "version": TEXT, "source": TEXT})),
    "notes": optional(listing(string)),
}
REQUIRED_HEADER = ("format_version", "pid")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} is beyond any float")
    return v


def _bounded(value: Any, what: str) -> None:
    """Every string and key at most MAX_STRING characters, nothing nested deeper than MAX_DEPTH."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if len(v) > MAX_STRING:
                raise Damaged(f"its {what} holds a string of {len(v):,} characters, more than {MAX_STRING:,}")
        elif isinstance(v, (list, dict)):
            if depth > MAX_DEPTH:
                raise Damaged(f"its {what} is nested more than {MAX_DEPTH} deep")
            if isinstance(v, dict):
                stack.extend((k, depth) for k in v)
                stack.extend((x, depth + 1) for x in v.values())
            else:
                stack.extend((x, depth + 1) for x in v)


def metadata(raw: bytes, what: str) -> dict[str, Any]:
    """The header or end record (``what``): a JSON object whose known keys have their types and ranges."""
    if len(raw) > MAX_META_BYTES:
        raise Damaged(f"its {what} is {len(raw):,} bytes, more than the {MAX_META_BYTES >> 20} MiB a trace holds")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Damaged(f"its {what} is not UTF-8 text (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise Damaged(f"its {what} is nested too deeply") from None
    except ValueError as e:
        raise Damaged(f"its {what} is not valid JSON ({str(e)[:120]})") from None
    if type(value) is not dict:
        raise Damaged(f"its {what} is {_what(value)}, not a JSON object")
    _bounded(value, what)
    for key, rule in FIELDS.items():
        if key in value:
            rule(value[key], f"its {what}'s {key}")
    return value


def header(raw: bytes, versions: tuple[int, ...]) -> dict[str, Any]:
    """The header, of one of the format ``versions`` (else OtherVersion)."""
    h = metadata(raw, "header")
    for key in REQUIRED_HEADER:
        if key not in h:
            raise Damaged(f"its header has no {key}")
    if h["format_version"] not in versions:
        raise OtherVersion(h["format_version"])
    return h


def end(raw: bytes) -> dict[str, Any]:
    return metadata(raw, "end record")


# ---- the schema ----------------------------------------------------------------------------------


def check_schema(got: pa.Schema, expected: pa.Schema) -> None:
    """The columns must be the event schema's, in its order, of its types."""
    try:
        names, want = got.names, expected.names
    except UnicodeDecodeError:
        raise Damaged("its column names are not UTF-8 text") from None
    if names != want:
        extra = [n for n in names if n not in want]
        missing = [n for n in want if n not in names]
        why = (f"an extra column {extra[0][:64]!r}" if extra else f"no column {missing[0]}" if missing
               else "its columns in another order")
        raise Damaged(f"its columns are not heapline's event columns ({why})")
    for field, ref in zip(got, expected, strict=True):
        if field.type != ref.type:
            raise Damaged(f"its column {field.name} is {field.type}, not {ref.type}")


# ---- column values -------------------------------------------------------------------------------

#: what the mapping calls that succeeded really mapped: addresses and lengths inside an address space
_MAPPED = {int(Kind.MMAP): ("ret", "a1"), int(Kind.MUNMAP): ("a0", "a1"), int(Kind.MPROTECT): ("a0", "a1"),
           int(Kind.MADVISE): ("a0", "a1"), int(Kind.MREMAP): ("a0", "a1", "a2", "ret"),
           int(Kind.BRK): ("ret",), int(Kind.RSS): ("a0", "a1", "a2", "a3", "a4"),
           int(Kind.RESIDENT): ("a0", "a1", "a2", "a3", "a4"), int(Kind.PAGES): ("a0", "a1")}
_SAMPLES = np.array([int(Kind.RSS), int(Kind.RESIDENT), int(Kind.PAGES)], dtype=np.uint16)
_CHECKED = np.zeros(64, dtype=bool)  # kind code -> checked here (codes from 63 up are no kind: clipped to 63)
_CHECKED[list(_MAPPED)] = True


def kind_codes(col: pa.ChunkedArray) -> np.ndarray:
    """The kind codes of the dictionary-encoded ``kind`` column: every name a kind, every index in
    its dictionary, no value empty."""
    parts = []
    for chunk in col.chunks:
        if chunk.null_count:
            raise Damaged("its kind column has empty values")
        try:
            chunk.dictionary.validate(full=True)
            names = chunk.dictionary.to_pylist()
        except (pa.ArrowInvalid, UnicodeDecodeError):
            raise Damaged("its kind dictionary is damaged") from None
        unknown = [n for n in names if n not in NAME_KINDS]
        if unknown:
            raise Damaged(f"its kind column names {str(unknown[0])[:64]!r}, which is no event kind")
        codes = np.array([NAME_KINDS[n] for n in names], dtype=np.uint16)
        idx = chunk.indices.to_numpy(zero_copy_only=False)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(codes)):
            raise Damaged("its kind column points outside its dictionary")
        parts.append(codes[idx])
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def no_empty_values(name: str, col: pa.ChunkedArray) -> None:
    if col.null_count:
        raise Damaged(f"its {name} column has empty values")


def values(cols: Mapping[str, np.ndarray] | Columns) -> None:
    """Times and durations that fit in an int64; what a process really mapped (the successful
    mapping calls, the break, RSS and smaps samples) inside an address space."""
    for name in ("ts", "dur"):
        c = cols[name]
        if len(c) and int(c.max()) > I64:
            what = "a timestamp" if name == "ts" else "a duration"
            raise Damaged(f"it holds {what} beyond 2^63 ns ({int(c.max()):#x})")
    kind = cols["kind"]
    at = np.flatnonzero(_CHECKED.take(kind, mode="clip"))  # the few records of these kinds, in one pass
    if not len(at):
        return
    kind, ret = kind[at], cols["ret"][at]
    failed = (ret < 0) & (ret >= -ERRNO_MAX) & ~np.isin(kind, _SAMPLES)  # samples carry no result
    for k, fields in _MAPPED.items():
        sel = (kind == k) & ~failed
        if not sel.any():
            continue
        for name in fields:
            c = cols[name][at[sel]]
            bad = ((c < 0) | (c > ADDRESS_SPACE)) if name == "ret" else c > np.uint64(ADDRESS_SPACE)
            if bad.any():
                raise Damaged(f"it holds a {KIND_NAMES[k]} record whose {name} {int(c[bad][0]):#x} lies beyond "
                              f"any address space (2^57 bytes)")
