"""Events stored column by column: the recording's hot-path form of ``EVENT_DTYPE``.

A structured array keeps each event's fields together, so every scan of one field (the kinds, the
pids) drags whole 88-byte records through memory. Between the ring buffer and the trace file the
recorder scans and writes fields one at a time, so the backends hand over :class:`Columns`: one
contiguous array per field of ``EVENT_DTYPE``, in the same order and types.

A read trace holds most of its events as allocator calls, whose arguments past the first (and
``aux``) are zero: those columns are kept as :class:`Sparse` (where the few others are, and what
they hold), and a column asked for by name is always a whole array.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import overload

import numpy as np

from tracer.events import EVENT_DTYPE

NAMES: tuple[str, ...] = tuple(EVENT_DTYPE.names or ())
CHUNK = 16384  # records per cache-sized step when splitting records into columns
MOSTLY_ZERO = ("aux", "a1", "a2", "a3", "a4", "a5")  # zero in every malloc, free and new
SPARSE_MIN_ROWS = 1 << 16  # fewer rows than this stay whole: nothing worth saving


class Sparse:
    """A column of ``n`` values, zero but at ``pos`` (ascending, distinct), which hold ``val``."""

    __slots__ = ("n", "pos", "val")

    def __init__(self, n: int, pos: np.ndarray, val: np.ndarray) -> None:
        self.n, self.pos, self.val = n, pos, val

    def __len__(self) -> int:
        return self.n

    @property
    def dtype(self) -> np.dtype:
        return self.val.dtype

    @property
    def nbytes(self) -> int:
        return self.pos.nbytes + self.val.nbytes

    def dense(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=self.val.dtype)
        out[self.pos] = self.val
        return out

    def take(self, index: np.ndarray) -> np.ndarray | Sparse:
        """The values at ``index``: kept sparse when the index ascends strictly (a selection)."""
        index = np.asarray(index, dtype=np.int64)
        if index.ndim == 0:  # one event: its value, as indexing the whole array gives it
            at = int(index) + self.n if index < 0 else int(index)
            if not 0 <= at < self.n:
                raise IndexError(f"index {int(index)} is out of bounds for a column of {self.n}")
            j = int(np.searchsorted(self.pos, at))
            return self.val[j] if j < len(self.pos) and self.pos[j] == at else self.val.dtype.type(0)
        if not len(index) or index[0] < 0 or not bool((index[1:] > index[:-1]).all()):
            return self._looked_up(index)
        j = np.searchsorted(index, self.pos)
        hit = j < len(index)
        hit[hit] = index[j[hit]] == self.pos[hit]
        return compact(len(index), j[hit], self.val[hit])

    def _looked_up(self, index: np.ndarray) -> np.ndarray:
        """The values at any ``index`` (unordered, repeated, negative), each found among the few
        non-zero ones: no whole column made."""
        if len(index) and (int(index.min()) < -self.n or int(index.max()) >= self.n):
            raise IndexError(f"an index is out of bounds for a column of {self.n}")
        at = np.where(index < 0, index + self.n, index)
        j = np.minimum(np.searchsorted(self.pos, at), max(len(self.pos) - 1, 0))
        out = np.zeros(len(index), dtype=self.val.dtype)
        if len(self.pos):
            hit = self.pos[j] == at
            out[hit] = self.val[j[hit]]
        return out

    def slice(self, key: slice) -> np.ndarray | Sparse:
        start, stop, step = key.indices(self.n)
        if step != 1:
            return self.dense()[key]
        stop = max(start, stop)
        lo, hi = np.searchsorted(self.pos, [start, stop])
        return compact(stop - start, self.pos[lo:hi] - start, self.val[lo:hi])


def compact(n: int, pos: np.ndarray, val: np.ndarray) -> np.ndarray | Sparse:
    """The column of ``n`` values, zero but at ``pos``: sparse when that takes less than half the
    bytes of the whole array (and the column is long), else the whole array."""
    if n < SPARSE_MIN_ROWS or 2 * len(pos) * (8 + val.dtype.itemsize) >= n * val.dtype.itemsize:
        out = np.zeros(n, dtype=val.dtype)
        out[pos] = val
        return out
    return Sparse(n, pos.astype(np.int64, copy=False), val)


def sparse(col: np.ndarray) -> np.ndarray | Sparse:
    """``col`` kept as :func:`compact` would keep it."""
    if len(col) < SPARSE_MIN_ROWS:
        return col
    pos = np.flatnonzero(col)
    return compact(len(col), pos, col[pos]) if len(pos) < len(col) // 4 else col


def dense(col: np.ndarray | Sparse) -> np.ndarray:
    return col.dense() if isinstance(col, Sparse) else col


class Columns:
    __slots__ = ("cols",)

    def __init__(self, cols: dict[str, np.ndarray | Sparse]) -> None:
        self.cols = cols

    def __len__(self) -> int:
        return len(self.cols["ts"])

    @overload
    def __getitem__(self, key: str) -> np.ndarray: ...

    @overload
    def __getitem__(self, key: slice | np.ndarray) -> Columns: ...

    def __getitem__(self, key: str | slice | np.ndarray) -> np.ndarray | Columns:
        """A column by name, or the events a slice, an index array or a boolean mask selects (as a
        structured array would answer)."""
        if isinstance(key, str):
            return dense(self.cols[key])
        if isinstance(key, slice):
            return Columns({name: col.slice(key) if isinstance(col, Sparse) else col[key]
                            for name, col in self.cols.items()})
        key = np.asarray(key)
        return self.take(np.flatnonzero(key) if key.dtype == bool else key)

    @staticmethod
    def empty() -> Columns:
        return Columns({name: np.empty(0, dtype=EVENT_DTYPE[name]) for name in NAMES})

    @staticmethod
    def from_records(records: np.ndarray) -> Columns:
        """Split structured records (or a strided view of them) into columns, a cache-sized chunk at a time."""
        n = len(records)
        cols = {name: np.empty(n, dtype=EVENT_DTYPE[name]) for name in NAMES}
        for start in range(0, n, CHUNK):
            part = records[start : start + CHUNK]
            for name in NAMES:
                cols[name][start : start + len(part)] = part[name]
        return Columns(cols)

    @staticmethod
    def from_words(words: np.ndarray, header_bytes: int) -> Columns:
        """Columns from records seen as rows of 64-bit words (``header_bytes`` of ring header first).

        One cache-friendly transpose makes every 8-byte field a contiguous row, used as it is; the
        narrower fields (pid and tid, kind, aux and cpu share words) are then cheap strided copies.
        """
        return Columns.from_rows(transpose(words), header_bytes)

    @staticmethod
    def from_rows(rows: np.ndarray, header_bytes: int) -> Columns:
        """Columns from transposed records (:func:`transpose`): row i holds the i-th word of each."""
        cols = {}
        for name in NAMES:
            dt, offset = EVENT_DTYPE.fields[name][:2]
            at = header_bytes + offset
            row = rows[at // 8]
            if dt.itemsize == 8:
                cols[name] = row.view(dt)
            else:
                per_word = 8 // dt.itemsize
                cols[name] = np.ascontiguousarray(row.view(dt)[(at % 8) // dt.itemsize :: per_word])
        return Columns(cols)

    @staticmethod
    def concat(parts: Iterable[Columns]) -> Columns:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Columns.empty()
        if len(parts) == 1:
            return parts[0]
        return Columns({name: np.concatenate([p[name] for p in parts]) for name in NAMES})

    @staticmethod
    def merged(parts: Iterable[Columns]) -> Columns:
        """The events of ``parts`` in time order, as a stable sort of their concatenation would give
        them, but with the largest part copied once rather than sorted and gathered: the smaller
        parts (sorted) are inserted into it."""
        parts = [p.sorted_by_time() for p in parts if len(p)]
        if len(parts) < 2:
            return parts[0] if parts else Columns.empty()
        at = max(range(len(parts)), key=lambda i: len(parts[i]))
        big = parts[at]
        small = Columns.concat(parts[:at] + parts[at + 1 :])
        before = sum(len(p) for p in parts[:at])  # rows of parts listed before the big one: first at equal times
        order = np.argsort(small["ts"], kind="stable")
        small = small.take(order)
        pos = np.where(order < before, np.searchsorted(big["ts"], small["ts"], side="left"),
                       np.searchsorted(big["ts"], small["ts"], side="right"))
        return Columns({name: np.insert(big[name], pos, small[name]) for name in NAMES})

    def where(self, mask: np.ndarray) -> Columns:
        """The events ``mask`` selects: these very columns when it selects them all (no copy: most
        traces hold one process, whose events are all of them)."""
        return self if bool(mask.all()) else self.take(np.flatnonzero(mask))

    def take(self, index: np.ndarray) -> Columns:
        return Columns({name: col.take(index) if isinstance(col, Sparse) else col[index]
                        for name, col in self.cols.items()})

    def sparse(self) -> Columns:
        """These columns with the mostly-zero ones kept sparse (:data:`MOSTLY_ZERO`)."""
        return Columns({name: sparse(dense(col)) if name in MOSTLY_ZERO else col for name, col in self.cols.items()})

    @property
    def nbytes(self) -> int:
        return sum(col.nbytes for col in self.cols.values())

    def sorted_by_time(self) -> Columns:
        ts = self.cols["ts"]
        if len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all()):
            return self
        return self.take(np.argsort(ts, kind="stable"))

    def sort_by_time_in_place(self, max_runs: int = 1024) -> Columns:
        """Put the events in time order (as a stable sort would), moving only those out of place.

        A recording's events are in time order but for a few stretches (a CPU's batch sent after
        another CPU's later records): an event is in place when none before it is later and none
        after it earlier, and each stretch between two such events holds exactly the events that
        belong there, so sorting the stretches alone is the whole sort, without a copy of every
        column. With more than ``max_runs`` stretches, one stable sort of everything. Columns
        that cannot be written are copied first."""
        ts = self.cols["ts"]
        if len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all()):
            return self
        placed = (ts == np.maximum.accumulate(ts)) & (ts == np.minimum.accumulate(ts[::-1])[::-1])
        edges = np.flatnonzero(np.diff(np.r_[False, ~placed, False].astype(np.int8)))
        runs = edges.reshape(-1, 2)  # [start, end) of each stretch out of place
        if len(runs) > max_runs:
            return self.take(np.argsort(ts, kind="stable")).sparse()
        was_sparse = [name for name, col in self.cols.items() if isinstance(col, Sparse)]
        for name, col in self.cols.items():
            if isinstance(col, Sparse):
                self.cols[name] = col.dense()  # sparse again below, once moved
            elif not col.flags.writeable:
                self.cols[name] = col.copy()
        for lo, hi in runs.tolist():
            order = lo + np.argsort(ts[lo:hi], kind="stable")
            for col in self.cols.values():
                col[lo:hi] = col[order]
        for name in was_sparse:
            self.cols[name] = sparse(self.cols[name])
        return self

    def to_records(self) -> np.ndarray:
        out = np.empty(len(self), dtype=EVENT_DTYPE)
        for name in NAMES:
            out[name] = self[name]
        return out


def transpose(words: np.ndarray) -> np.ndarray:
    """Records as rows of 64-bit words -> one contiguous row per word, a cache-sized chunk at a time."""
    n, width = words.shape
    rows = np.empty((width, n), dtype=np.uint64)
    for start in range(0, n, CHUNK):
        np.copyto(rows[:, start : start + CHUNK], words[start : start + CHUNK].T)
    return rows


#: events as every whole-trace scan takes them: a structured array of EVENT_DTYPE or Columns
Events = np.ndarray | Columns
