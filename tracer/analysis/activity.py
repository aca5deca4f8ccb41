"""Allocator activity over time: blocks handed out and ended per time slice, and each malloc_trim.

A *block allocated* is a successful allocation (malloc, calloc, realloc, new, the aligned forms:
a call that handed out a non-NULL pointer); a *block freed* is a free, delete or realloc that
ended a block (``free(NULL)`` and failed calls do not count). Freed bytes are those the block was
asked for when it was allocated; a block allocated before tracing began ends with 0 bytes (sizes
are never guessed, as in :mod:`tracer.analysis.allocmodel`). Slices are equal cuts of the span
from the first to the last allocator call, so a short churn inside a long run keeps its detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer import fields as ef
from tracer.analysis.allocmodel import pairing, since_last_exec
from tracer.events import Kind
from tracer.tracefile import Trace

SLICES = 1000


@dataclass
class Activity:
    edges: np.ndarray  # SLICES + 1 slice bounds, trace clock ns
    allocated: np.ndarray  # blocks allocated in each slice
    freed: np.ndarray  # blocks freed in each slice
    allocated_bytes: np.ndarray  # bytes asked for by those allocations
    freed_bytes: np.ndarray  # bytes those frees ended (as asked for when allocated)
    trims: np.ndarray  # one row per malloc_trim: start ns, duration ns, its argument (pad), returned 1 or 0

    @property
    def total(self) -> int:
        return int(self.allocated.sum() + self.freed.sum())


def activity(trace: Trace, pid: int, slices: int = SLICES) -> Activity:
    """The allocator activity of process ``pid`` from its last exec on, in ``slices`` time slices."""
    ev = since_last_exec(trace.columns.where(trace.columns["pid"] == pid))
    opens, closes, ends = pairing(trace, pid)
    ts = ev["ts"].astype(np.int64)
    k = ev["kind"]
    trim = ev[k == Kind.MALLOC_TRIM]
    trims = np.stack([trim["ts"].astype(np.int64), trim["dur"].astype(np.int64),
                      ef.malloc_trim.pad(trim).astype(np.int64), ef.malloc_trim.released(trim).astype(np.int64)],
                     axis=1) if len(trim) else np.zeros((0, 4), np.int64)
    calls = np.concatenate([opens, closes])
    if not len(calls):
        return Activity(np.zeros(2, np.int64), *(np.zeros(1, np.int64) for _ in range(4)), trims)
    lo, hi = int(ts[calls].min()), int(ts[calls].max()) + 1
    edges = lo + (np.arange(slices + 1, dtype=np.int64) * (hi - lo)) // slices

    def slice_of(rows: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(edges, ts[rows], side="right") - 1, 0, slices - 1)

    size = ef.blocks.requested_size(ev)[opens].astype(np.int64)
    ended = ends >= 0
    close_size = np.zeros(len(closes), dtype=np.int64)
    close_size[ends[ended]] = size[ended]
    at_open, at_close = slice_of(opens), slice_of(closes)
    count = np.bincount
    return Activity(edges, count(at_open, minlength=slices), count(at_close, minlength=slices),
                    count(at_open, weights=size, minlength=slices).astype(np.int64),
                    count(at_close, weights=close_size, minlength=slices).astype(np.int64), trims)
