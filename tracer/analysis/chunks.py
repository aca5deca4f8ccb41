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

from dataclasses import dataclass

import numpy as np

from tracer import fields as ef
from tracer.columns import Events
from tracer.events import ALLOC_KINDS, Kind

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

    def __len__(self) -> int:
        return len(self.ptr)


def blocks(ev: Events) -> Blocks:
    """The blocks of ``ev`` (one process's events from its last exec, in time order)."""
    k = np.ascontiguousarray(ev["kind"])
    ret = ev["ret"].astype(np.uint64)
    ptr_in = ef.blocks.pointer_in(ev)
    is_alloc = np.isin(k, np.array(sorted(ALLOC_KINDS), dtype=np.uint16))
    out_ptr = ef.blocks.pointer_out(ev)
    size = ef.blocks.requested_size(ev).astype(np.int64)
    resize = (k == Kind.REALLOC) | (k == Kind.REALLOCARRAY)
    opens = np.flatnonzero(is_alloc & (out_ptr != 0))
    closes = np.flatnonzero((((k == Kind.FREE) | (k == Kind.DELETE)) & (ptr_in != 0))
                            | (resize & (ptr_in != 0) & ((ret != 0) | (size == 0))))
    # rows: closes before opens within one call (a realloc ends the old block, then opens the new)
    seq = np.concatenate([closes, opens])
    sub = np.concatenate([np.zeros(len(closes), np.int8), np.ones(len(opens), np.int8)])
    ptr = np.concatenate([ptr_in[closes], out_ptr[opens]])
    order = np.lexsort((sub, seq, ptr))
    p, s, is_open = ptr[order], seq[order], sub[order] == 1
    nxt_close = np.zeros(len(order), dtype=bool)
    nxt_close[:-1] = (p[1:] == p[:-1]) & ~is_open[1:] & is_open[:-1]
    rows = np.flatnonzero(is_open)  # in (ptr, seq) order
    closed_by = np.where(nxt_close[rows], s[np.minimum(rows + 1, len(s) - 1)], -1)
    by_time = np.argsort(s[rows], kind="stable")
    op, cl = s[rows][by_time], closed_by[by_time]
    ts = ev["ts"].astype(np.int64)
    tid = np.ascontiguousarray(ev["tid"])
    n = len(op)
    b = Blocks(
        ptr=out_ptr[op], size=size[op], chunk=chunk_size(size[op]), mmapped=np.zeros(n, dtype=bool),
        opened=ts[op], closed=np.where(cl >= 0, ts[np.maximum(cl, 0)], NEVER),
        open_tid=tid[op], close_tid=np.where(cl >= 0, tid[np.maximum(cl, 0)], 0),
        close_kind=np.where(cl >= 0, k[np.maximum(cl, 0)], 0).astype(np.uint16),
        tcache_take=((k[op] == Kind.MALLOC) | (k[op] == Kind.NEW) | (resize[op] & (ptr_in[op] == 0))),
        went=np.full(n, BIN, dtype=np.int8), occupied_until=np.where(cl >= 0, ts[np.maximum(cl, 0)], NEVER),
    )
    _mark_mmapped(ev, k, b, op)
    return b


def _mark_mmapped(ev: Events, k: np.ndarray, b: Blocks, op: np.ndarray) -> None:
    """Blocks whose chunk is a mapping made (mmap, mremap) inside their own call, on its thread."""
    maps = np.flatnonzero(((k == Kind.MMAP) | (k == Kind.MREMAP)) & ef.ok(ev))
    if not len(maps) or not len(op):
        return
    start = ev["ret"][maps].astype(np.uint64)
    length = np.where(k[maps] == Kind.MMAP, ef.mmap.length(ev)[maps], ef.mremap.new_length(ev)[maps]).astype(np.int64)
    mts, mtid = ev["ts"][maps].astype(np.int64), ev["tid"][maps]
    by = np.lexsort((mts, start))
    start, length, mts, mtid = start[by], length[by], mts[by], mtid[by]
    chunk = b.ptr - np.uint64(HEADER)
    call_end = b.opened + ev["dur"][op].astype(np.int64)
    # the last mapping at that address made at or before the call's end
    j = np.searchsorted(start, chunk, side="right") - 1
    while True:  # step back over later mappings at the same address (rare: one or two)
        jj = np.maximum(j, 0)
        later = (j >= 0) & (start[jj] == chunk) & (mts[jj] > call_end)
        if not later.any():
            break
        j = np.where(later, j - 1, j)
    jj = np.maximum(j, 0)
    hit = (j >= 0) & (start[jj] == chunk) & (mts[jj] >= b.opened) & (mts[jj] <= call_end) & (mtid[jj] == b.open_tid)
    b.mmapped[hit] = True
    b.chunk[hit] = length[jj][hit]


def occupancy(b: Blocks, ev: Events, arena_of: np.ndarray, tcache: bool = True, fastbins: bool = True) -> None:
    """Where each freed chunk went (``b.went``) and until when it stayed occupied (``b.occupied_until``).

    ``arena_of``: an arena number per block (fastbins are per arena); ``tcache``/``fastbins``: False
    when the program turned them off (``glibc.malloc.tcache_count=0``, ``mxfast=0``)."""
    small = ~b.mmapped & (b.chunk <= TCACHE_MAX_CHUNK)
    freed = small & (b.closed != NEVER)
    takes = small & b.tcache_take
    k = np.ascontiguousarray(ev["kind"])
    trig = np.flatnonzero((k == Kind.MALLOC_TRIM) | (k == Kind.MALLOPT))
    big_free = ~b.mmapped & (b.closed != NEVER) & (b.chunk >= CONSOLIDATE_FREE)
    big_alloc = ~b.mmapped & (b.chunk >= MIN_LARGE_CHUNK)
    exits = np.flatnonzero(k == Kind.EXIT)
    # one time-ordered list of what can change a tcache or fastbin: (ts, order, what, index)
    parts = [
        (b.closed[freed], np.full(freed.sum(), 1), np.full(freed.sum(), 0), np.flatnonzero(freed)),
        (b.opened[takes | small], np.full((takes | small).sum(), 2), np.full((takes | small).sum(), 1),
         np.flatnonzero(takes | small)),
        (b.closed[big_free], np.full(big_free.sum(), 1), np.full(big_free.sum(), 2), np.flatnonzero(big_free)),
        (b.opened[big_alloc], np.full(big_alloc.sum(), 0), np.full(big_alloc.sum(), 2), np.flatnonzero(big_alloc)),
        (ev["ts"][trig].astype(np.int64), np.full(len(trig), 0), np.full(len(trig), 2), np.full(len(trig), -1)),
        (ev["ts"][exits].astype(np.int64), np.full(len(exits), 3), np.full(len(exits), 3), exits),
    ]
    ts = np.concatenate([p[0] for p in parts])
    if not len(ts):
        return
    pri = np.concatenate([p[1] for p in parts])
    what = np.concatenate([p[2] for p in parts])
    idx = np.concatenate([p[3] for p in parts])
    order = np.lexsort((pri, ts))
    ts, what, idx = ts[order], what[order], idx[order]
    tids = np.ascontiguousarray(ev["tid"])
    rest, mismatches = _tcache_only(b, ts, what, idx, tids[exits], ev["ts"][exits].astype(np.int64)) if tcache \
        else (np.ones(len(ts), dtype=bool), 0)
    b.mismatches = mismatches + _walk(b, ts[rest].tolist(), what[rest].tolist(), idx[rest].tolist(), arena_of, tids,
                                      tcache, fastbins)


def _tcache_only(b: Blocks, ts: np.ndarray, what: np.ndarray, idx: np.ndarray, exit_tid: np.ndarray,
                 exit_ts: np.ndarray) -> tuple[np.ndarray, int]:
    """The size classes whose tcache bins never overflow, all at once.

    When no thread's bin of a class ever holds more than 7 chunks, no chunk of that class reaches a
    fastbin: every free goes into the freeing thread's tcache, a malloc takes the newest chunk there
    when there is one (else it is served elsewhere), and frees pair with the mallocs that take them
    back like brackets. Their chunks' spans are set here, vectorized (a churn of millions of
    malloc/free pairs is all of this kind). Returns the mask of the events left for the sequential
    walk, and the mismatches found (a malloc that did not return the chunk the tcache had on top)."""
    keep = np.ones(len(ts), dtype=bool)
    sel = np.flatnonzero(what <= 1)
    if not len(sel):
        return keep, 0
    i = idx[sel]
    is_free = what[sel] == 0
    cls = (b.chunk[i] - MINSIZE) // 16
    tid = np.where(is_free, b.close_tid[i], b.open_tid[i]).astype(np.int64)
    take = ~is_free & b.tcache_take[i]
    _, g = np.unique((tid << 8) | cls, return_inverse=True)
    by = np.argsort(g, kind="stable")  # by (thread, class), in time order within each
    gs = g[by]
    d = np.where(is_free, 1, np.where(take, -1, 0))[by]
    starts = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(gs)])
    s = np.cumsum(d)
    s -= np.repeat(np.r_[0, s[starts[1:] - 1]], sizes)  # the running sum within each group
    big = 2 * (len(d) + 1)
    floor = np.minimum.accumulate(np.minimum(s, 0) - gs * big) + gs * big  # its running minimum (at most 0)
    depth = s - floor  # the bin's count after each event: a malloc on an empty bin takes nothing from it
    before = np.r_[0, depth[:-1]]
    before[starts] = 0
    pops = (d == -1) & (before > 0)
    # classes where some thread's bin would overflow (or a call bypasses the tcache) are walked
    bad_group = np.zeros(len(sizes), dtype=bool)
    bad_group[np.unique(gs[(depth > TCACHE_COUNT) | ((d == 0) & ~np.r_[is_free[by]])])] = True
    cls_by = cls[by]
    bad_cls = np.unique(cls_by[bad_group[gs]])
    simple = ~np.isin(cls_by, bad_cls)
    rows = np.flatnonzero(simple)
    mismatches = 0
    if len(rows):
        f = is_free[by][rows]
        p = pops[rows]
        pairable = f | p
        rr = rows[pairable]
        level = np.where(f[pairable], depth[rr], depth[rr] + 1)  # a free and the malloc taking it back share one
        o = np.lexsort((rr, level, gs[rr]))
        r, fr = rr[o], f[pairable][o]
        pair = np.flatnonzero(~fr[1:] & fr[:-1] & (gs[r[1:]] == gs[r[:-1]])) + 1
        freed_blocks, taken = i[by[r[pair - 1]]], i[by[r[pair]]]
        blk = i[by[rows[f]]]
        b.went[blk] = CACHED
        b.occupied_until[blk] = NEVER
        b.occupied_until[freed_blocks] = b.opened[taken]
        mismatches = int((b.ptr[freed_blocks] != b.ptr[taken]).sum())
        left = blk[b.occupied_until[blk] == NEVER]  # still cached: until its thread exits
        if len(left) and len(exit_tid):
            last_exit = dict(zip(exit_tid.tolist(), exit_ts.tolist(), strict=False))
            b.occupied_until[left] = [last_exit.get(int(t), NEVER) for t in b.close_tid[left].tolist()]
    keep[sel[by[rows]]] = False
    return keep, mismatches


def _walk(b: Blocks, ts: list, what: list, idx: list, arena_of: np.ndarray, ev_tid: np.ndarray,
          tcache: bool, fastbins: bool) -> int:
    """The sequential part: tcache bins per thread and class, fastbins per arena and class."""
    cls = ((b.chunk - MINSIZE) // 16).tolist()
    ptr = b.ptr.tolist()
    chunk = b.chunk.tolist()
    close_tid, open_tid, take = b.close_tid.tolist(), b.open_tid.tolist(), b.tcache_take.tolist()
    arena = arena_of.tolist()
    went = b.went
    until = b.occupied_until
    tc: dict[tuple[int, int], list[int]] = {}
    fb: dict[tuple[int, int], list[int]] = {}
    where: dict[int, tuple[int, int]] = {}  # block -> its fastbin key
    mismatches = 0
    for t, w, i in zip(ts, what, idx, strict=True):
        if w == 0:  # a free of a small chunk
            key = (close_tid[i], cls[i])
            bin_ = tc.setdefault(key, [])
            if tcache and len(bin_) < TCACHE_COUNT:
                bin_.append(i)
                went[i], until[i] = CACHED, NEVER  # until it is taken again
            elif fastbins and chunk[i] <= FASTBIN_MAX_CHUNK:
                fkey = (arena[i], cls[i])
                fb.setdefault(fkey, []).append(i)
                where[i] = fkey
                went[i], until[i] = FAST, NEVER
        elif w == 1:  # a small chunk handed out: from the tcache, else a fastbin, else elsewhere
            key = (open_tid[i], cls[i])
            bin_ = tc.get(key)
            if take[i] and bin_:
                j = bin_.pop()
                until[j] = t
                mismatches += ptr[j] != ptr[i]
                continue
            fkey = (arena[i], cls[i])
            fbin = fb.get(fkey)
            if fbin:
                j = fbin.pop()
                where.pop(j, None)
                until[j] = t
                mismatches += ptr[j] != ptr[i]
                if tcache:  # the rest of that fastbin moves into the tcache
                    bin_ = tc.setdefault(key, [])
                    while fbin and len(bin_) < TCACHE_COUNT:
                        m = fbin.pop()
                        where.pop(m, None)
                        bin_.append(m)
                        went[m] = CACHED
        elif w == 2:  # consolidation: the arena's fastbin chunks become free chunks
            a = arena[i] if i >= 0 else None
            for fkey in [f for f in fb if a is None or f[0] == a]:
                for j in fb.pop(fkey):
                    where.pop(j, None)
                    until[j] = t
        else:  # a thread exited: its cached chunks go to the bins
            tid = int(ev_tid[i])
            for key in [key for key in tc if key[0] == tid]:
                for j in tc.pop(key):
                    until[j] = t
    return int(mismatches)
