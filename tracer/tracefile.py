"""The trace file: Arrow IPC (Feather v2) columns, streamed to disk while recording.

Layout: the Arrow IPC file format, i.e. the magic ``ARROW1``, the schema message (carrying
heapline's header as JSON in the schema metadata key ``heapline``), one record batch per flush
(at least once a second while recording), a last batch whose custom metadata key ``heapline.end``
holds what is only known at the end (exit code, lost events, end time), then the footer.

A recorder killed with SIGKILL leaves everything but the footer; :func:`open_trace` reads every
file as the IPC stream after the magic, so such a file gives its batches and ``complete=False``.
Nothing of a file is trusted before :mod:`tracer.tracescan` (messages and sizes) and
:mod:`tracer.tracecheck` (header, end record, schema, values) checked it: any other damage, or a
file that is not a heapline trace, raises :class:`TraceFileError` with one sentence.

The columns are those of ``tracer.events.EVENT_DTYPE`` (``ts``, ``dur``, ``pid``, ``tid``, ``kind``,
``aux``, ``cpu``, ``a0``..``a5``, ``ret``), with ``kind`` dictionary-encoded as its name ("brk",
"mmap", ...), so ``pandas.read_feather(path)`` or any Arrow reader shows readable rows. Rows are
in arrival order; sort by ``ts`` for time order.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tracer import memavail, tracecheck, tracescan
from tracer.columns import MOSTLY_ZERO, Columns, Sparse, compact
from tracer.errors import Exit, HeaplineError, TooBig, TraceFileError
from tracer.events import EVENT_DTYPE, SCHEMA_VERSION, Kind
from tracer.units import human_bytes

FORMAT_VERSION = 3  # 2: RESIDENT events (smaps samples); 3: PAGES events (pagemap of the heaps).
READS_VERSIONS = (1, 2, 3)  # an older trace has none of them and reads the same
# LZ4 frames, compressed with acceleration 20 (a negative level): measured on 10M malloc/free
# records, 39 ns per event instead of 49 for 7.4 bytes instead of 6.8; on 3.6M calls of a
# Python program, 50 instead of 66 ns for 11.0 instead of 10.2 bytes. Any LZ4 reader reads them.
LZ4_LEVEL = -20
MAGIC = b"ARROW1"
HEADER_KEY = b"heapline"
END_KEY = "heapline.end"

KIND_ORDER = np.array([int(k) for k in Kind], dtype=np.uint16)
KIND_DICT = pa.array([k.name.lower() for k in Kind], type=pa.string())
# kind code -> dictionary index, -1 for codes that are no kind; every code from 63 up is taken
# as 63 (np.take's clip: half the time of indexing a 64k table), which is no kind either
_CODE_TO_INDEX = np.full(64, -1, dtype=np.int8)
_CODE_TO_INDEX[KIND_ORDER] = np.arange(len(KIND_ORDER), dtype=np.int8)
assert KIND_ORDER.max() < 63

_ARROW_TYPES = {"<u8": pa.uint64(), "<u4": pa.uint32(), "<u2": pa.uint16(), "<i8": pa.int64()}


def arrow_schema(header: dict[str, Any] | None = None) -> pa.Schema:
    fields = []
    for name in EVENT_DTYPE.names:
        if name == "kind":
            fields.append(pa.field("kind", pa.dictionary(pa.int8(), pa.string())))
        else:
            fields.append(pa.field(name, _ARROW_TYPES[EVENT_DTYPE[name].str]))
    meta = {HEADER_KEY: json.dumps(header).encode()} if header is not None else None
    return pa.schema(fields, metadata=meta)


def to_batch(events: np.ndarray | Columns, schema: pa.Schema) -> pa.RecordBatch:
    cols = []
    for name in EVENT_DTYPE.names:
        col = np.ascontiguousarray(events[name])  # a copy for records; as it is for Columns
        if name == "kind":
            idx = _CODE_TO_INDEX.take(col, mode="clip")
            if (idx < 0).any():
                raise ValueError(f"unknown event kind in {sorted(set(col[idx < 0].tolist()))}")
            # the codes were checked just above: no second bounds check
            cols.append(pa.DictionaryArray.from_arrays(pa.array(idx, type=pa.int8()), KIND_DICT, safe=False))
        else:
            cols.append(pa.array(col))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


class _Filling:
    """The columns of a trace, filled batch by batch: each batch's values are copied in and the
    batch let go, so reading holds the events once (not the decoded Arrow table beside them)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.cols = {name: np.empty(rows, dtype=EVENT_DTYPE[name]) for name in EVENT_DTYPE.names
                     if name not in MOSTLY_ZERO}
        # the mostly-zero columns, batch by batch: where their values are not zero, and those values
        self.nonzero: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in MOSTLY_ZERO}
        self.n = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Copy one batch in; raises :class:`tracecheck.Damaged` for values no recording writes."""
        lo, hi = self.n, self.n + batch.num_rows
        if hi > self.rows:
            raise tracecheck.Damaged(f"its batches hold more than the {self.rows:,} events they claim")
        for name in EVENT_DTYPE.names:
            col = batch.column(name)
            if name == "kind":
                self.cols[name][lo:hi] = tracecheck.kind_codes(pa.chunked_array([col]))
            else:
                tracecheck.no_empty_values(name, col)
                values = col.to_numpy(zero_copy_only=False)
                if name in self.nonzero:
                    at = np.flatnonzero(values)
                    self.nonzero[name].append((at + lo, values[at]))
                else:
                    self.cols[name][lo:hi] = values
        self.n = hi

    def columns(self) -> Columns:
        cols: dict[str, np.ndarray | Sparse] = {name: col[: self.n] for name, col in self.cols.items()}
        for name, parts in self.nonzero.items():
            dt = EVENT_DTYPE[name]
            pos = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, np.int64)
            val = np.concatenate([v for _, v in parts]).astype(dt, copy=False) if parts else np.zeros(0, dt)
            cols[name] = compact(self.n, pos, val)
        out = Columns({name: cols[name] for name in EVENT_DTYPE.names})
        tracecheck.values(out)
        return out


class TraceWriteError(HeaplineError):
    """Writing the trace failed (a full disk, a device that takes nothing); what was written stays
    readable as a truncated trace."""

    code = Exit.OUTPUT_NOT_WRITABLE


class TraceWriter:
    """Streams event batches to an Arrow IPC file; never loses what was already written.

    A write that fails raises :class:`TraceWriteError` once; the writer then takes nothing more and
    :meth:`close` only closes the file (a truncated trace, read back with ``complete: false``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # unbuffered (every batch reaches the kernel when written) and close-on-exec
            self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()/abort()
        except OSError as e:
            raise HeaplineError(f"cannot write the trace to {path}: {e.strerror}", Exit.OUTPUT_NOT_WRITABLE) from e
        self._sink = pa.PythonFile(self._file, mode="w")
        self._writer: ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None
        self.events_written = 0
        self.bytes_written = 0
        self.cpu_s = 0.0  # converting to Arrow, compressing and writing
        self.failed: TraceWriteError | None = None
        self._started = False

    def _failure(self, e: OSError) -> TraceWriteError:
        self.failed = TraceWriteError(f"cannot write the trace to {self.path}: {e.strerror or e}")
        return self.failed

    @property
    def started(self) -> bool:
        """The header reached the file (from then on the file is a trace, whatever happens)."""
        return self._started

    def abort(self) -> None:
        """Nothing was recorded: remove the file (a regular file only: ``-o /dev/null`` stays)."""
        self._close_file()
        try:
            if stat.S_ISREG(os.stat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    def start(self, header: dict[str, Any]) -> None:
        header = {"format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION, **header}
        self._schema = arrow_schema(header)
        opts = ipc.IpcWriteOptions(compression=pa.Codec("lz4", compression_level=LZ4_LEVEL), use_threads=False)
        try:
            self._writer = ipc.new_file(self._sink, self._schema, options=opts)
        except OSError as e:
            raise self._failure(e) from e
        self._started = True

    def write(self, events: np.ndarray | Columns) -> None:
        if not len(events) or self.failed is not None:
            return
        assert self._writer is not None and self._schema is not None
        t0 = time.process_time()
        try:
            self._writer.write_batch(to_batch(events, self._schema))
        except OSError as e:
            raise self._failure(e) from e
        self.cpu_s += time.process_time() - t0
        self.events_written += len(events)
        self.bytes_written = self._sink.tell()

    def close(self, end: dict[str, Any]) -> None:
        """Write the end metadata and the footer (after a failed write: only close the file)."""
        if self._writer is None or self.failed is not None:
            self._close_file()
            return
        assert self._schema is not None
        last = to_batch(np.empty(0, dtype=EVENT_DTYPE), self._schema)
        try:
            self._writer.write_batch(last, custom_metadata={END_KEY: json.dumps(end)})
            self._writer.close()
            self.bytes_written = self._sink.tell()
        except OSError as e:
            self._close_file()
            raise self._failure(e) from e
        self._close_file()

    def _close_file(self) -> None:
        self._writer = None
        for f in (self._sink, self._file):
            try:
                f.close()
            except OSError:  # what the kernel refused was refused already
                pass


class Trace:
    """A read trace: header and end metadata, and its events in time order, held as columns
    (:attr:`columns`, what scans of whole traces use) and, when asked for, as one structured array
    of ``EVENT_DTYPE`` (:attr:`events`)."""

    def __init__(self, path: str, header: dict[str, Any], end: dict[str, Any] | None, events: np.ndarray | Columns,
                 complete: bool, notes: list[str] | None = None) -> None:
        self.path, self.header, self.end, self.complete = path, header, end, complete
        self.notes = list(notes or [])
        self._columns = events if isinstance(events, Columns) else None
        self._records = events if isinstance(events, np.ndarray) else None

    @property
    def columns(self) -> Columns:
        if self._columns is None:
            assert self._records is not None
            self._columns = Columns.from_records(self._records)
        return self._columns

    @property
    def events(self) -> np.ndarray:
        if self._records is None:
            self._records = self.columns.to_records()
        return self._records

    def __len__(self) -> int:
        return len(self._columns) if self._columns is not None else len(self.events)

    @property
    def meta(self) -> dict[str, Any]:
        """Header and end metadata together (end wins)."""
        return {**self.header, **(self.end or {})}


def _bad(path: str, why: str) -> TraceFileError:
    return TraceFileError(f"{path} is not a readable heapline trace: {why}")


def open_trace(path: str, need: Need | None = None) -> Trace:
    """Read a whole trace (events sorted by time). Raises TraceFileError with one sentence, and
    :class:`TooBig` when the work ``need`` describes would take more memory than there is."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError as e:
        raise TraceFileError(f"no such trace file: {path}") from e
    except IsADirectoryError as e:
        raise TraceFileError(f"{path} is a directory, not a trace file") from e
    except OSError as e:
        raise TraceFileError(f"cannot read {path}: {e.strerror}") from e
    if not head.startswith(MAGIC):
        raise _bad(path, "it does not start with the Arrow file signature")
    try:
        with pa.memory_map(path) as src:
            return _read(path, src.read_buffer(), need or Need("reading it", 0))
    except tracecheck.OtherVersion as e:
        raise TraceFileError(
            f"{path} is a heapline trace of format version {str(e.version)[:20]}; this heapline reads versions "
            f"{', '.join(map(str, READS_VERSIONS))}"
        ) from None
    except tracecheck.Damaged as e:
        raise _bad(path, str(e)) from None
    except MemoryError:
        raise TooBig(f"{path} is too large to read into the memory this process can get "
                     f"({human_bytes(memavail.available())} now)") from None
    except (pa.ArrowException, ValueError) as e:  # damage the checks did not foresee: damage all the same
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise _bad(path, f"unexpected content ({why})") from e
    except OSError as e:
        raise TraceFileError(f"cannot read {path}: {e.strerror or e}") from e


@dataclass(frozen=True)
class Need:
    """What a command needs to hold per event of a trace beside its columns (bytes, as measured on
    large traces by bench/replay_bench.py), and what it calls the work, for the sentence."""

    work: str
    per_event: int


def _check_room(path: str, rows: int, need: Need) -> None:
    want = rows * (EVENT_DTYPE.itemsize + need.per_event)
    room = memavail.available()
    if want > room:
        raise TooBig(f"{path} holds {rows:,} events: {need.work} needs about {human_bytes(want)} of memory and "
                     f"this process can get {human_bytes(room)}")


def _read(path: str, buf: pa.Buffer, need: Need) -> Trace:
    """The trace in ``buf`` (the whole file), read as the IPC stream after the file magic: its
    messages checked first (tracer.tracescan, tracer.tracecheck), then decoded. A file with its
    footer must be whole; one without (the recorder was killed) gives the batches before the first
    that cannot be read."""
    expected = arrow_schema(None)
    found = tracescan.scan(buf, expected, HEADER_KEY, READS_VERSIONS)
    listed = tracescan.footer_batches(buf, MAGIC)
    finished = listed is not None
    if finished and (not found.eos or listed != found.batches):
        raise tracecheck.Damaged(f"its footer lists {listed:,} batches and {found.batches:,} can be read")
    _check_room(path, found.rows, need)
    filling = _Filling(found.rows)
    batches = 0
    end: dict[str, Any] | None = None
    reader = ipc.open_stream(pa.BufferReader(buf.slice(8, found.readable_end - 8)))
    while True:
        try:
            batch, custom = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as e:
            if finished:
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise tracecheck.Damaged(f"its batch {batches + 1} of {found.batches} is damaged ({why})") from e
            break  # the torn tail of an interrupted write
        filling.add(batch)
        batches += 1
        if custom is not None and END_KEY.encode() in custom:
            end = tracecheck.end(custom[END_KEY.encode()])
        del batch
    del reader
    pa.default_memory_pool().release_unused()  # the decoded batches' memory, back to the system
    notes: list[str] = []
    if not finished:
        notes.append("the recording did not finish cleanly; the events written before it stopped were recovered")
    elif end is None:
        notes.append("the trace has no end record")
    events = filling.columns()
    return Trace(path, found.header, end, events.sort_by_time_in_place(), finished and end is not None, notes)
