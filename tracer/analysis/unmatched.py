"""Frees of blocks the trace never saw allocated, and why: the trace's own check of its allocator calls.

A free whose pointer no traced call returned (an *unmatched* free, :mod:`tracer.analysis.allocmodel`)
is either glibc's or the program's doing, and then the trace is whole, or the sign of allocator
calls the probes did not see. Explained here, each by a rule that a second tool can check:

- ``thread_exit``: a thread that ends frees the chunks its tcache holds, and then the tcache's own
  chunk (glibc's ``tcache_thread_shutdown``, called from ``__libc_thread_freeres``). Those frees are
  the thread's last allocator calls, within 10 ms of its end; each pointer is a chunk the model had
  in that thread's tcache when it exited, except the very last one, the tcache's chunk, which no
  traced call made. A process's main thread does none of this: exit() does not empty the tcache.
- ``before_recording``: heapline attached to a running process; the block was allocated before,
  in memory the attach snapshot saw (the heap up to the break then, or a mapping then).
- ``from_parent``: a forked child freeing a block its parent had live when it forked (the
  child's copy of it).

What is left (``unexplained``) is what the probes missed, or a program freeing what it did not
allocate; the trace then does not hold every allocator call, whatever the event counters say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis import accounting
from tracer.analysis import chunks as ch
from tracer.analysis.allocmodel import inherited
from tracer.analysis.model import own_events
from tracer.columns import Events
from tracer.events import ALLOCATOR_KINDS, Kind
from tracer.tracefile import Trace

SHUTDOWN_NS = 10_000_000  # the tcache's last free comes right before the thread ends (4-18 us measured)


@dataclass
class Unmatched:
    total: int
    thread_exit: int = 0
    before_recording: int = 0
    from_parent: int = 0

    @property
    def unexplained(self) -> int:
        return self.total - self.thread_exit - self.before_recording - self.from_parent

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "thread_exit": self.thread_exit, "before_recording": self.before_recording,
                "from_parent": self.from_parent, "unexplained": self.unexplained}


def of_process(trace: Trace, pid: int) -> Unmatched:
    """The unmatched frees of process ``pid`` of ``trace``, by cause."""
    m = accounting.model(trace, pid)
    ev, _, snapshot = own_events(trace, m.tl.pid)
    got = inherited(trace.columns, m.tl.pid) if m.tl.pid != int(trace.meta["pid"]) else None
    return unmatched(ev, m.blocks, snapshot, got.ptr if got is not None else None)


def unmatched(ev: Events, b: ch.Blocks, snapshot: dict[str, Any] | None,
              from_parent: np.ndarray | None = None) -> Unmatched:
    """The unmatched frees of one process (``ev`` from its last exec, ``b`` its blocks after
    :func:`tracer.analysis.chunks.occupancy`), by cause; ``snapshot``: the attach snapshot;
    ``from_parent``: the pointers of the blocks it got live from its parent at its fork."""
    ptr_in = ef.blocks.pointer_in(ev)
    rows = b.unmatched
    if not len(rows):
        return Unmatched(0)
    freed = ptr_in[rows].astype(np.uint64)
    parent = np.isin(freed, from_parent) if from_parent is not None else np.zeros(len(rows), dtype=bool)
    at_exit = ~parent & _at_thread_exit(ev, b, rows)
    before = np.zeros(len(rows), dtype=bool)
    if snapshot:
        before = ~parent & ~at_exit & _in_snapshot(freed, snapshot)
    return Unmatched(len(rows), int(at_exit.sum()), int(before.sum()), int(parent.sum()))


def _at_thread_exit(ev: Events, b: ch.Blocks, rows: np.ndarray) -> np.ndarray:
    """Which unmatched frees (event indexes ``rows``) are glibc emptying an exiting thread's tcache."""
    k = np.ascontiguousarray(ev["kind"])
    tid = np.ascontiguousarray(ev["tid"])
    ex = np.flatnonzero(k == Kind.EXIT)
    out = np.zeros(len(rows), dtype=bool)
    if not len(ex):
        return out
    exit_at = dict(zip(tid[ex].tolist(), ev["ts"][ex].astype(np.int64).tolist(), strict=False))
    # every thread's allocator calls, thread after thread, in time order within each
    calls = np.flatnonzero(np.isin(k, np.array(sorted(ALLOCATOR_KINDS), dtype=np.uint16)))
    calls = calls[np.argsort(tid[calls], kind="stable")]
    last_of = np.r_[np.flatnonzero(tid[calls][1:] != tid[calls][:-1]), len(calls) - 1] if len(calls) else calls
    cached = (b.went == ch.CACHED) & (b.occupied_until != ch.NEVER)
    held = {(t, p) for t, p, u in zip(b.close_tid[cached].tolist(), b.ptr[cached].tolist(),
                                       b.occupied_until[cached].tolist(), strict=True)
            if exit_at.get(t) == u}  # in the thread's tcache when it exited
    ptr_in = ef.blocks.pointer_in(ev)
    place = {r: i for i, r in enumerate(rows.tolist())}
    ts = ev["ts"]
    for end in last_of.tolist():
        t = int(tid[calls[end]])
        if t not in exit_at or t == int(ev["pid"][calls[end]]) or exit_at[t] - int(ts[calls[end]]) > SHUTDOWN_NS:
            continue  # the main thread's exit frees nothing
        j = end
        while j >= 0 and int(tid[calls[j]]) == t and k[calls[j]] == Kind.FREE and int(calls[j]) in place:
            r = int(calls[j])
            if j != end and (t, int(ptr_in[r])) not in held:  # the last one: the tcache's own chunk
                break
            out[place[r]] = True
            j -= 1
    return out


def _in_snapshot(ptr: np.ndarray, snap: dict[str, Any]) -> np.ndarray:
    """Pointers inside the heap or a mapping the attach snapshot saw."""
    spans = [(int(m["start"]), int(m["end"])) for m in snap.get("mappings", [])]
    if snap.get("start_brk") and snap.get("brk"):
        spans.append((int(snap["start_brk"]), int(snap["brk"])))
    if not spans:
        return np.zeros(len(ptr), dtype=bool)
    spans.sort()
    lo = np.array([s for s, _ in spans], dtype=np.uint64)
    hi = np.array([e for _, e in spans], dtype=np.uint64)
    hi = np.maximum.accumulate(hi)  # overlapping spans: the furthest end so far
    j = np.searchsorted(lo, ptr, side="right") - 1
    return (j >= 0) & (ptr < hi[np.maximum(j, 0)])
