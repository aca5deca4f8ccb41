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
        return live_series(ev, start)

    return cached(trace, ("live", pid), compute)


def live_series(ev: Events, start: Blocks | None = None) -> LiveSeries:
    """``ev``: events in time order (any kinds; the allocator calls are picked out); ``start``:
    blocks already live before them (a forked child's, from its parent)."""
    if start is not None and len(start.ptr):
        return _with_start(ev, start)
    k = np.ascontiguousarray(ev["kind"])
    ret = ev["ret"].astype(np.uint64)
    ptr_in = blocks.pointer_in(ev)
    is_alloc = _IS_ALLOC.take(k, mode="clip")
    ptr_out = blocks.pointer_out(ev)
    opened = is_alloc & (ptr_out != 0)
    resize = (k == Kind.REALLOC) | (k == Kind.REALLOCARRAY)
    size = blocks.requested_size(ev)
    # closes: free/delete of a non-NULL pointer; realloc of a non-NULL pointer that succeeded
    # (the old block ends even when the new one is at the same address) or that freed (size 0)
    closed = ((k == Kind.FREE) | (k == Kind.DELETE)) & (ptr_in != 0)
    closed |= resize & (ptr_in != 0) & ((ret != 0) | (size == 0))

    n_open, n_close = int(opened.sum()), int(closed.sum())
    # one row per open or close: time, order within the call (close before open), pointer, size
    t = np.concatenate([ev["ts"][closed], ev["ts"][opened]])
    sub = np.concatenate([np.zeros(n_close, np.int8), np.ones(n_open, np.int8)])
    seq = np.concatenate([np.flatnonzero(closed), np.flatnonzero(opened)])
    ptr = np.concatenate([ptr_in[closed], ptr_out[opened]])
    sz = np.concatenate([np.zeros(n_close, np.uint64), size[opened]]).astype(np.int64)
    is_open = sub == 1

    # match each close with the row before it at the same pointer, if that row opened a block
    by_ptr = np.lexsort((sub, seq, ptr))
    p_sorted, open_sorted = ptr[by_ptr], is_open[by_ptr]
    prev_same = np.zeros(len(by_ptr), dtype=bool)
    prev_same[1:] = p_sorted[1:] == p_sorted[:-1]
    prev_open = np.zeros(len(by_ptr), dtype=bool)
    prev_open[1:] = open_sorted[:-1]
    matched_sorted = ~open_sorted & prev_same & prev_open
    freed = np.zeros(len(by_ptr), dtype=np.int64)
    freed[1:] = sz[by_ptr][:-1]
    close_size = np.zeros(len(t), dtype=np.int64)
    close_size[by_ptr[matched_sorted]] = freed[matched_sorted]
    matched = np.zeros(len(t), dtype=bool)
    matched[by_ptr[matched_sorted]] = True
    # blocks still open: an open row not followed by a matched close at the same pointer
    next_matched = np.zeros(len(by_ptr), dtype=bool)
    next_matched[:-1] = matched_sorted[1:]
    still = open_sorted & ~next_matched
    still_rows = by_ptr[still]

    order = np.lexsort((sub, seq))
    delta_bytes = np.where(is_open, sz, -close_size)[order]
    delta_blocks = np.where(is_open, 1, np.where(matched, -1, 0))[order]
    return LiveSeries(
        ts=t[order],
        live_bytes=np.cumsum(delta_bytes),
        live_blocks=np.cumsum(delta_blocks),
        unmatched_frees=int((~is_open & ~matched).sum()),
        open_ptr=ptr[still_rows],
        open_size=sz[still_rows],
        open_ts=t[still_rows],
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
