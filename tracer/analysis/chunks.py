"""Every traced block as the chunk glibc made of it, with the span in which the chunk was occupied.

A block of ``n`` bytes returned at ``p`` occupies the chunk ``[p - 16, p - 16 + chunk_size(n))``
(x86-64 glibc 2.36: ``request2size``); a block glibc mmapped is a mapping of its own, found as the
``mmap`` (or, for a realloc, the ``mremap``) whose result is ``p - 16``, made inside the call.

A freed chunk does not always become free memory. glibc 2.36 first puts it in the freeing
thread's tcache (7 chunks per size class, chunks up to 1,040 bytes, last in first out): in use to
glibc, free to the program (*cached*); a chunk of at most 128 bytes that finds its tcache bin full
goes to a fastbin: free to ``mallinfo2`` (``fsmblks``) but not merged with its neighbours until
glibc consolidates (a large request, a free that merges 64 KiB or more, ``malloc_trim``,
``mallopt``). :func:`occupancy` follows both, in time order, over the calls that can change them
(malloc takes the newest cached chunk of its class; from a fastbin it takes the newest and moves
the rest of that bin into the tcache, as glibc's ``tcache_put`` loop does). Chunks leave the
model's tcache only as glibc makes them leave: taken again, or put in the bins when their thread
exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracer import fields as ef
from tracer.analysis import bins
from tracer.analysis.allocmodel import index_dtype, pairs
from tracer.columns import Events
from tracer.events import Kind

HEADER = 16  # from the chunk's start to the pointer malloc returns
MINSIZE = 32
TCACHE_MAX_CHUNK = 1040  # chunk of the largest request the tcache holds (1,032 bytes)
TCACHE_COUNT = 7
FASTBIN_MAX_CHUNK = 128
MIN_LARGE_CHUNK = 1024  # a request for at least this chunk consolidates the fastbins first
CONSOLIDATE_FREE = 64 << 10  # FASTBIN_CONSOLIDATION_THRESHOLD
NEVER = np.iinfo(np.int64).max

# where a freed chunk went
BIN, CACHED, FAST = 0, 1, 2
_CLOSERS = (Kind.FREE, Kind.DELETE, Kind.REALLOC, Kind.REALLOCARRAY)


def chunk_size(n: np.ndarray) -> np.ndarray:
    """glibc's chunk for requests of ``n`` bytes: max(32, (n + 8 + 15) & ~15)."""
    n = np.asarray(n, dtype=np.uint64)
    return np.maximum(np.uint64(MINSIZE), (n + np.uint64(8 + 15)) & ~np.uint64(15)).astype(np.int64)


@dataclass
class Blocks:
    """One row per traced allocation of one process, in the order they were made."""

    ptr: np.ndarray  # uint64 address returned
    size: np.ndarray  # int64 bytes requested
    chunk: np.ndarray  # int64 chunk bytes (mmapped: the mapping's length)
    mmapped: np.ndarray  # bool
    opened: np.ndarray  # int64 ns
    closed: np.ndarray  # int64 ns (NEVER while live)
    open_tid: np.ndarray
    close_tid: np.ndarray  # 0 while live
    close_kind: np.ndarray  # the kind of the call that ended it (0 while live)
    tcache_take: np.ndarray  # bool: made by a call that takes from the tcache first (malloc, new, realloc(NULL))
    went: np.ndarray  # int8 BIN / CACHED / FAST once freed (occupancy)
    occupied_until: np.ndarray  # int64 ns: the chunk stays occupied (live, cached or in a fastbin) until then
    mismatches: int = 0  # calls glibc served other than the model expected (the figures are estimates then)
    unmatched: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # frees of no traced block

    def __len__(self) -> int:
        return len(self.ptr)


def blocks(ev: Events, paired: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Blocks:
    """The blocks of ``ev`` (one process's events from its last exec, in time order); ``paired``:
    allocmodel.pairs of ``ev`` when already known."""
    # every whole-trace column is indexed at once: only the opens' and closes' values are kept
    k = np.ascontiguousarray(ev["kind"])
    op, closes, ends = paired if paired is not None else pairs(ev)
    cl = np.where(ends >= 0, closes[np.maximum(ends, 0)], -1) if len(closes) else np.full(len(op), -1)
    ended, at_close = cl >= 0, np.maximum(cl, 0)
    matched = np.zeros(len(closes), dtype=bool)
    matched[ends[ends >= 0]] = True
    ts = np.ascontiguousarray(ev["ts"]).view(np.int64)  # times fit in an int64 (tracecheck.values)
    tid = np.ascontiguousarray(ev["tid"])
    size = ef.blocks.requested_size(ev)[op].astype(np.int64)
    kind_op = k[op]
    resize = (kind_op == Kind.REALLOC) | (kind_op == Kind.REALLOCARRAY)
    closed = np.where(ended, ts[at_close], NEVER)
    n = len(op)
    b = Blocks(
        ptr=ef.blocks.pointer_out(ev)[op], size=size, chunk=chunk_size(size), mmapped=np.zeros(n, dtype=bool),
        opened=ts[op], closed=closed,
        open_tid=tid[op], close_tid=np.where(ended, tid[at_close], 0),
        close_kind=np.where(ended, k[at_close], 0).astype(np.uint16),
        tcache_take=(kind_op == Kind.MALLOC) | (kind_op == Kind.NEW) | (resize & (ef.blocks.pointer_in(ev)[op] == 0)),
        went=np.full(n, BIN, dtype=np.int8), occupied_until=closed.copy(),
        unmatched=closes[~matched],
    )
    del closed, at_close, ended, cl, kind_op, resize
    _mark_mmapped(ev, k, b, op)
    return b


def _mark_mmapped(ev: Events, k: np.ndarray, b: Blocks, op: np.ndarray) -> None:
    """Blocks whose chunk is a mapping made (mmap, mremap) inside their own call, on its thread."""
    maps = np.flatnonzero(((k == Kind.MMAP) | (k == Kind.MREMAP)) & ef.ok(ev))
    if not len(maps) or not len(op):
        return
    m = ev[maps]
    start = np.ascontiguousarray(m["ret"]).view(np.uint64)
    length = np.where(k[maps] == Kind.MMAP, ef.mmap.length(m), ef.mremap.new_length(m)).astype(np.int64)
    mts, mtid = m["ts"].astype(np.int64), m["tid"]
    by = np.lexsort((mts, start))
    start, length, mts, mtid = start[by], length[by], mts[by], mtid[by]
    # only blocks whose chunk starts where a mapping does: the few that can be mapped by malloc
    chunk = b.ptr - np.uint64(HEADER)
    j = np.searchsorted(start, chunk, side="right") - 1
    cand = np.flatnonzero((j >= 0) & (start[np.maximum(j, 0)] == chunk))
    del j
    chunk, j = chunk[cand], np.searchsorted(start, chunk[cand], side="right") - 1
    opened, tid = b.opened[cand], b.open_tid[cand]
    call_end = opened + np.ascontiguousarray(ev["dur"])[op[cand]].view(np.int64)
    # the last mapping at that address made at or before the call's end
    while True:  # step back over later mappings at the same address (rare: one or two)
        jj = np.maximum(j, 0)
        later = (j >= 0) & (start[jj] == chunk) & (mts[jj] > call_end)
        if not later.any():
            break
        j = np.where(later, j - 1, j)
    jj = np.maximum(j, 0)
    hit = (j >= 0) & (start[jj] == chunk) & (mts[jj] >= opened) & (mts[jj] <= call_end) & (mtid[jj] == tid)
    b.mmapped[cand[hit]] = True
    b.chunk[cand[hit]] = length[jj][hit]


def occupancy(b: Blocks, ev: Events, arena_of: np.ndarray, tcache: bool = True, fastbins: bool = True) -> None:
    """Where each freed chunk went (``b.went``) and until when it stayed occupied (``b.occupied_until``).

    ``arena_of``: an arena number per block (fastbins are per arena); ``tcache``/``fastbins``: False
    when the program turned them off (``glibc.malloc.tcache_count=0``, ``mxfast=0``)."""
    small = ~b.mmapped & (b.chunk <= TCACHE_MAX_CHUNK)
    freed = small & (b.closed != NEVER)
    k = np.ascontiguousarray(ev["kind"])
    trig = np.flatnonzero((k == Kind.MALLOC_TRIM) | (k == Kind.MALLOPT))
    big_free = ~b.mmapped & (b.closed != NEVER) & (b.chunk >= CONSOLIDATE_FREE)
    big_alloc = ~b.mmapped & (b.chunk >= MIN_LARGE_CHUNK)
    exits = np.flatnonzero(k == Kind.EXIT)
    # one time-ordered list of what can change a tcache or fastbin: (ts, order, what, index); the
    # order breaks ties of ts (a large request consolidates first, exits come last)
    rows = index_dtype(max(len(b), len(k)))
    parts = [
        (b.opened[big_alloc], 0, bins.CONSOLIDATE, np.flatnonzero(big_alloc).astype(rows)),
        (ev["ts"][trig].astype(np.int64), 0, bins.CONSOLIDATE, np.full(len(trig), -1, dtype=rows)),
        (b.closed[freed], 1, bins.FREE, np.flatnonzero(freed).astype(rows)),
        (b.closed[big_free], 1, bins.CONSOLIDATE, np.flatnonzero(big_free).astype(rows)),
        (b.opened[small], 2, bins.HAND_OUT, np.flatnonzero(small).astype(rows)),
        (ev["ts"][exits].astype(np.int64), 3, bins.EXIT, exits.astype(rows)),
    ]
    ts = np.concatenate([p[0] for p in parts])
    if not len(ts) or not len(b):
        return
    what = np.concatenate([np.full(len(p[0]), p[2], dtype=np.int8) for p in parts])
    idx = np.concatenate([p[3] for p in parts])
    del parts
    order = np.argsort(ts, kind="stable")  # the parts are in tie order already
    b.mismatches = _walk(b, order, ts, what, idx, arena_of, np.ascontiguousarray(ev["tid"]), tcache, fastbins)


def _walk(b: Blocks, order: np.ndarray, ts: np.ndarray, what: np.ndarray, idx: np.ndarray, arena_of: np.ndarray,
          ev_tid: np.ndarray, tcache: bool, fastbins: bool) -> int:
    """Tcache bins per thread and class, fastbins per arena and class, over the steps in ``order``
    (:func:`tracer.analysis.bins.walk`, compiled); returns the mismatches."""
    small = b.chunk <= TCACHE_MAX_CHUNK
    cls = np.where(small, (b.chunk - MINSIZE) // 16, 0).astype(np.int32)  # only small chunks take steps
    threads, number = bins.numbered(np.concatenate([b.open_tid, b.close_tid]))
    n = len(b)
    return int(bins.walk(order, ts, what, idx, cls, number[:n], number[n:], arena_of, threads.astype(np.int64),
                         int(arena_of.max(initial=0)) + 1, ev_tid, b.ptr, b.chunk <= FASTBIN_MAX_CHUNK,
                         b.tcache_take, b.went, b.occupied_until, tcache, fastbins, TCACHE_COUNT, CACHED, FAST,
                         NEVER))
