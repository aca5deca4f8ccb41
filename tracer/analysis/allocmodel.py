"""Live blocks and bytes over time, from allocator-call events (vectorized; no Python per event).

Every successful allocation opens a block (pointer, requested size); every free, delete,
moving realloc or ``realloc(p, 0)`` closes the block most recently opened at that pointer. A
close with no open block before it (the block was allocated before tracing began, or the pointer
was never ours) is counted as an *unmatched* free and changes nothing: sizes are never guessed.

A forked child starts with a copy of its parent's heap: the blocks live in the parent when it
forked (as traced) are the child's first blocks (:func:`inherited`), unless the child has since
exec'd (its address space started over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer.analysis.cache import cached
from tracer.columns import Columns, Events
from tracer.events import ALLOC_KINDS, EVENT_DTYPE, Kind
from tracer.fields import blocks, forks


@dataclass
class LiveSeries:
    ts: np.ndarray  # time of each open/close, ascending
    live_bytes: np.ndarray  # requested bytes live right after it
    live_blocks: np.ndarray
    unmatched_frees: int
    open_ptr: np.ndarray  # blocks still open at the end: pointer, size, time allocated
    open_size: np.ndarray
    open_ts: np.ndarray

    @property
    def bytes_final(self) -> int:
        return int(self.live_bytes[-1]) if len(self.live_bytes) else 0

    @property
    def bytes_peak(self) -> int:
        return int(self.live_bytes.max()) if len(self.live_bytes) else 0

    @property
    def blocks_final(self) -> int:
        return int(self.live_blocks[-1]) if len(self.live_blocks) else 0


_IS_ALLOC = np.zeros(64, dtype=bool)
_IS_ALLOC[list(ALLOC_KINDS)] = True
_ALLOC_OR_CLOSE = np.array(sorted({*ALLOC_KINDS, Kind.FREE, Kind.DELETE, Kind.REALLOC, Kind.REALLOCARRAY}),
                           dtype=np.uint16)  # fmt: skip


@dataclass
class Blocks:
    """Blocks opened before a process's own events: pointer, size, time allocated."""

    ptr: np.ndarray
    size: np.ndarray
    ts: np.ndarray
    at: int  # when the process got them (its fork)


def since_last_exec(ev: Events) -> Events:
    """The events of one process from its last execve on: the address space they describe."""
    ex = np.flatnonzero(ev["kind"] == Kind.EXEC)
    return ev[ex[-1] :] if len(ex) else ev


def inherited(ev: Events, pid: int, depth: int = 0) -> Blocks | None:
    """The blocks ``pid`` got from its parent at the fork, when both are in ``ev`` (all the
    trace's events, in time order) and ``pid`` has not exec'd since; None otherwise."""
    if depth > 64 or ((ev["pid"] == pid) & (ev["kind"] == Kind.EXEC)).any():
        return None
    fork = ev[(ev["kind"] == Kind.FORK) & (forks.child(ev) == pid) & ~forks.thread(ev)]
    if not len(fork):
        return None
    parent, at = int(fork["pid"][0]), int(fork["ts"][0])
    before = ev[(ev["pid"] == parent) & (ev["ts"] < at)]
    exec_before = bool((before["kind"] == Kind.EXEC).any())
    live = live_series(since_last_exec(before), None if exec_before else inherited(ev, parent, depth + 1))
    return Blocks(live.open_ptr, live.open_size, live.open_ts, at)


def process_live(trace: Any, pid: int) -> LiveSeries:
    """The live series of process ``pid`` of ``trace`` (a tracefile.Trace): its events from its last
    exec on, starting with the blocks it got at its fork unless it is the traced process itself.
    Computed once per trace: the model, the summary and several findings ask for it."""

    def compute() -> LiveSeries:
        ev = since_last_exec(trace.columns.where(trace.columns["pid"] == pid))
        start = inherited(trace.columns, pid) if pid != int(trace.meta["pid"]) else None
        return live_series(ev, start, pairing(trace, pid))

    return cached(trace, ("live", pid), compute)


def pairing(trace: Any, pid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(opens, closes, ended_by) of process ``pid``'s events from its last exec on, computed once
    per trace: the live series and the chunk model both pair the same calls."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pairs(since_last_exec(trace.columns.where(trace.columns["pid"] == pid)))

    return cached(trace, ("pairs", pid), compute)


def pairs(ev: Events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The opens and closes of ``ev`` and, for each open, the close that ended it (:func:`ended_by`)."""
    opens, closes = opens_and_closes(ev)
    return opens, closes, ended_by(opens, closes, blocks.pointer_out(ev)[opens], blocks.pointer_in(ev)[closes])


def opens_and_closes(ev: Events) -> tuple[np.ndarray, np.ndarray]:
    """The event indexes, ascending, of the calls that opened a block and of those that closed one:
    a free or delete of a non-NULL pointer, a realloc of a non-NULL pointer that succeeded (the old
    block ends even when the new one is at the same address) or that freed (size 0)."""
    k = np.ascontiguousarray(ev["kind"])
    ptr_in = blocks.pointer_in(ev)
    resize = (k == Kind.REALLOC) | (k == Kind.REALLOCARRAY)
    closed = ((k == Kind.FREE) | (k == Kind.DELETE)) & (ptr_in != 0)
    closed |= resize & (ptr_in != 0) & ((ev["ret"] != 0) | (blocks.requested_size(ev) == 0))
    opened = _IS_ALLOC.take(k, mode="clip") & (blocks.pointer_out(ev) != 0)
    kind = index_dtype(len(k))
    return np.flatnonzero(opened).astype(kind), np.flatnonzero(closed).astype(kind)


def index_dtype(n: int) -> type[np.signedinteger]:
    """The integer type of indexes into ``n`` rows: int32 while it holds them (half the memory of
    the per-call arrays a large trace keeps), else int64."""
    return np.int32 if n < 2**31 - 1 else np.int64


def call_order(opens: np.ndarray, closes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each open and each close (ascending event indexes) goes among all of them in call
    order, a call's close before its open: (places of the opens, places of the closes). Counted
    over the events (closes at or before each, opens before each) rather than searched: a search
    of millions of places among millions takes twice as long."""
    events = int(max(opens[-1] if len(opens) else -1, closes[-1] if len(closes) else -1)) + 1
    kind = index_dtype(events + 1)
    mark = np.zeros(events, dtype=kind)
    mark[closes] = 1
    closes_to = np.cumsum(mark, dtype=kind)
    at_open = np.arange(len(opens)) + closes_to[opens]
    del closes_to
    mark[:] = 0
    mark[opens] = 1
    opens_before = np.cumsum(mark, dtype=kind)
    opens_before -= mark
    return at_open, np.arange(len(closes)) + opens_before[closes]


def ended_by(opens: np.ndarray, closes: np.ndarray, opened_at: np.ndarray, closed_at: np.ndarray) -> np.ndarray:
    """For each open (event indexes ``opens``, pointers ``opened_at``), the place in ``closes`` of
    the close that ended it (the next call at that pointer, when it is a close; a call's close
    comes before its open), or -1 while it is live."""
    at_open, at_close = call_order(opens, closes)
    rows = len(closes) + len(opens)
    ptr = np.empty(rows, dtype=np.uint64)
    ptr[at_close], ptr[at_open] = closed_at, opened_at
    number = np.empty(rows, dtype=np.int64)  # an open's place among the opens, or -1 - a close's
    number[at_open] = np.arange(len(opens))
    number[at_close] = -1 - np.arange(len(closes))
    order = np.argsort(ptr, kind="stable")  # by pointer, in call order at each
    ptr, number = ptr[order], number[order]
    at = np.flatnonzero((ptr[1:] == ptr[:-1]) & (number[1:] < 0) & (number[:-1] >= 0))
    out = np.full(len(opens), -1, dtype=index_dtype(rows))
    out[number[at]] = -1 - number[at + 1]
    return out


def live_series(ev: Events, start: Blocks | None = None,
                paired: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> LiveSeries:
    """``ev``: events in time order (any kinds; the allocator calls are picked out); ``start``:
    blocks already live before them (a forked child's, from its parent); ``paired``: :func:`pairs`
    of ``ev`` when already known."""
    if start is not None and len(start.ptr):
        return _with_start(ev, start)
    opens, closes, ends = paired if paired is not None else pairs(ev)
    size = blocks.requested_size(ev)[opens].astype(np.int64)
    ended = ends >= 0
    close_size = np.zeros(len(closes), dtype=np.int64)  # 0: a close of nothing traced
    close_size[ends[ended]] = size[ended]
    matched = np.zeros(len(closes), dtype=bool)
    matched[ends[ended]] = True
    # one row per open or close, in call order
    at_open, at_close = call_order(opens, closes)
    seq = np.empty(len(opens) + len(closes), dtype=np.int64)
    seq[at_open], seq[at_close] = opens, closes
    delta_bytes = np.empty(len(seq), dtype=np.int64)
    delta_bytes[at_open], delta_bytes[at_close] = size, -close_size
    delta_blocks = np.empty(len(seq), dtype=np.int32)  # fewer blocks than 2^31 rows: a count fits
    delta_blocks[at_open], delta_blocks[at_close] = 1, -matched.astype(np.int32)
    live = np.flatnonzero(~ended)
    live = live[np.argsort(blocks.pointer_out(ev)[opens][live], kind="stable")]  # by pointer
    return LiveSeries(
        ts=ev["ts"][seq],
        live_bytes=np.cumsum(delta_bytes),
        live_blocks=np.cumsum(delta_blocks, dtype=index_dtype(len(seq))),
        unmatched_frees=int((~matched).sum()),
        open_ptr=blocks.pointer_out(ev)[opens][live],
        open_size=size[live],
        open_ts=ev["ts"][opens][live],
    )


def _with_start(ev: Events, start: Blocks) -> LiveSeries:
    """live_series of ``start``'s blocks, opened at ``start.at`` by mallocs, then ``ev``."""
    n = len(start.ptr)
    first = np.zeros(n, dtype=EVENT_DTYPE)
    first["ts"], first["kind"], first["a0"] = start.at, Kind.MALLOC, start.size.astype(np.uint64)
    first["ret"] = start.ptr.astype(np.int64)
    rest = ev.to_records() if isinstance(ev, Columns) else np.asarray(ev)
    both = np.concatenate([first, rest[np.isin(rest["kind"], _ALLOC_OR_CLOSE)]])
    s = live_series(both)
    # the blocks keep the time they were allocated in the parent (its live pointers are distinct)
    kept = np.flatnonzero((s.open_ts == start.at) & np.isin(s.open_ptr, start.ptr))
    if len(kept):
        by_ptr = np.argsort(start.ptr)
        s.open_ts[kept] = start.ts[by_ptr[np.searchsorted(start.ptr, s.open_ptr[kept], sorter=by_ptr)]]
    return s
