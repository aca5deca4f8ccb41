"""The heap accounting: what the allocator's memory is at one instant, chunk by chunk.

For the main heap (``[start_brk, break)``) and every thread-arena heap (a 64 MiB glibc reservation,
committed up to what ``mprotect`` made accessible) this lays the chunks occupied at that instant
(live blocks, chunks in a tcache or a fastbin: :mod:`tracer.analysis.chunks`) along the heap, and
reads off what ``mallinfo2`` would say: the gaps between occupied chunks are free chunks in glibc's
bins (``ordblks`` - 1 of them), the space above the highest occupied chunk is the top chunk
(``keepcost``), fastbin chunks are free (``fsmblks``), and everything else is in use (``uordblks``:
live chunks with their headers, cached chunks, the tcache's own chunk, the arena's header).
Mmapped chunks are counted apart (``hblkhd``), the thresholds as in force then.

What ``malloc_trim(0)`` would give back is glibc's own rule (``mtrim``, ``systrim``): in each free
chunk, after consolidating the fastbins, the whole pages past its first 48 bytes; of the main
heap's top, all whole pages but one chunk's worth. Where the model met a call it could not place
(a tcache or fastbin hit at another address than glibc's order gives), ``exact`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis import chunks as ch
from tracer.analysis import thresholds as thr
from tracer.analysis.cache import cached
from tracer.analysis.model import Timeline, build, own_events
from tracer.analysis.residency import resident
from tracer.decode import MADV_DONTNEED
from tracer.events import Kind
from tracer.tracefile import Trace

HEAP_MAX = 64 << 20  # a thread arena's heap: reserved 64 MiB, aligned to 64 MiB
TCACHE_STRUCT = 0x290  # the chunk of a thread's tcache_perthread_struct, made by glibc itself (not a traced call)
MALLOC_CHUNK_STRUCT = 48  # sizeof(struct malloc_chunk): mtrim keeps it at the start of every free chunk


@dataclass
class Model:
    """What the accounting needs of one process, computed once per trace."""

    tl: Timeline
    blocks: ch.Blocks
    thresholds: list[thr.Thresholds]
    heaps: list[int]  # start of every thread-arena heap seen
    page: int
    heap_calls: np.ndarray  # (ts, kind, start, end) of every mprotect and madvise(MADV_DONTNEED) call
    exits: dict[int, int]  # tid -> when it ended


def model(trace: Trace, pid: int | None = None) -> Model:
    tl = build(trace, pid)
    key = ("accounting", tl.pid)
    return cached(trace, key, lambda: _model(trace, tl))


def _tunables(env: dict[str, str]) -> tuple[bool, bool]:
    tun = env.get("GLIBC_TUNABLES", "")
    tcache = "glibc.malloc.tcache_count=0" not in tun
    fastbins = "glibc.malloc.mxfast=0" not in tun
    return tcache, fastbins


def _model(trace: Trace, tl: Timeline) -> Model:
    ev, _, _ = own_events(trace, tl.pid)
    env = trace.meta.get("malloc_env") or {}
    b = ch.blocks(ev)
    mp = tl.mappings
    heaps = sorted({int(s) for s in mp["start"][mp["what"] == "heap-arena"]} if len(mp) else set())
    heaps = sorted({h & ~(HEAP_MAX - 1) for h in heaps})
    arena = _arena_of(b.ptr, heaps)
    tcache, fastbins = _tunables(env)
    ch.occupancy(b, ev, arena, tcache=tcache, fastbins=fastbins)
    page = int(trace.meta.get("machine", {}).get("page_size", 4096))
    k = np.ascontiguousarray(ev["kind"])
    # mprotect and madvise name their range alike (addr, length): one column each for both kinds
    accessible = (k == Kind.MPROTECT) & (ef.mprotect.prot(ev) != 0)
    emptied = (k == Kind.MADVISE) & (ef.madvise.advice(ev) == MADV_DONTNEED)
    sel = np.flatnonzero((accessible | emptied) & (ev["ret"] == 0))
    start = ef.madvise.addr(ev)[sel].astype(np.int64)
    length = ef.page_up(ef.madvise.length(ev)[sel], page).astype(np.int64)
    calls = np.stack([ev["ts"][sel].astype(np.int64), k[sel].astype(np.int64), start, start + length],
                     axis=1) if len(sel) else np.empty((0, 4), np.int64)
    ex = np.flatnonzero(k == Kind.EXIT)
    exits = dict(zip(ev["tid"][ex].tolist(), ev["ts"][ex].astype(np.int64).tolist(), strict=True))
    return Model(tl, b, thr.history(ev, b, env, tl.t0), heaps, page, calls, exits)


def _arena_of(ptr: np.ndarray, heaps: list[int]) -> np.ndarray:
    """0 for the main heap, else 1 + the index of the thread-arena heap holding the pointer."""
    out = np.zeros(len(ptr), dtype=np.int64)
    if heaps:
        h = np.array(heaps, dtype=np.uint64)
        j = np.searchsorted(h, ptr, side="right") - 1
        inside = (j >= 0) & (ptr - h[np.maximum(j, 0)] < np.uint64(HEAP_MAX))
        out[inside] = j[inside] + 1
    return out


def _asof(frame: Any, col: str, ts: int, default: int) -> int:
    t = frame["ts"].to_numpy(np.int64)
    j = int(np.searchsorted(t, ts, side="right")) - 1
    return int(frame[col].iloc[j]) if j >= 0 else default


def _heap(m: Model, lo: int, hi: int, end: int, ts: int) -> dict[str, Any] | None:
    """The figures of one heap ``[lo, end)`` (``hi``: where its reservation ends) at ``ts``."""
    b = m.blocks
    inside = ~b.mmapped & (b.ptr >= np.uint64(lo)) & (b.ptr < np.uint64(hi))
    ever = inside & (b.opened <= ts)
    if not ever.any() and lo == m.tl.start_brk and end > lo:  # only glibc's own tcache chunk so far
        first = lo + TCACHE_STRUCT
    elif not ever.any():
        return None
    else:
        first = int((b.ptr[ever] - np.uint64(ch.HEADER)).min())  # below it: glibc's own (tcache, arena header)
    occ = ever & (b.occupied_until > ts)
    live = occ & (b.closed > ts)
    cached = occ & ~live & (b.went == ch.CACHED)
    fast = occ & ~live & (b.went == ch.FAST)
    start = (b.ptr[occ] - np.uint64(ch.HEADER)).astype(np.int64)
    size = b.chunk[occ]
    order = np.argsort(start, kind="stable")
    start, size = start[order], size[order]
    own = [(lo, first - lo)]  # glibc's own chunks and headers below the first traced chunk
    if lo != m.tl.start_brk and ever.any():  # a thread heap: its first thread's tcache goes when that thread ends
        tid = int(b.open_tid[ever][np.argmin(b.opened[ever])])
        if m.exits.get(tid, ch.NEVER) <= ts:
            own = [(lo, first - TCACHE_STRUCT - lo)]
    start = np.r_[[o[0] for o in own], start]
    size = np.r_[[o[1] for o in own], size]
    ends = start + size
    top_from = int(ends.max())
    gaps = start[1:] - np.maximum.accumulate(ends)[:-1]
    absorbed = int(gaps[(gaps > 0) & (gaps < ch.MINSIZE)].sum())  # exhausted remainders: part of the chunk below
    runs = gaps[gaps >= ch.MINSIZE]
    run_at = (np.maximum.accumulate(ends)[:-1])[gaps >= ch.MINSIZE]
    heap_size = end - lo
    top = max(end - top_from, 0)
    fast_bytes = int(b.chunk[fast].sum())
    free = top + int(runs.sum()) + fast_bytes
    hl = np.flatnonzero(live)
    highest = None
    if len(hl):
        i = hl[int(np.argmax((b.ptr[hl] - np.uint64(ch.HEADER)).astype(np.int64) + b.chunk[hl]))]
        c0 = int(b.ptr[i]) - ch.HEADER
        c1 = c0 + int(b.chunk[i])
        below = ends[ends <= c0]
        under = c0 - int(below.max()) if len(below) else 0  # the free chunk right below it
        if c1 == top_from:
            highest = {"address": hex(int(b.ptr[i])), "size": int(b.size[i]), "chunk": int(b.chunk[i]),
                       "allocated_at_ns": int(b.opened[i]), "free_below": under, "top_if_freed": top + c1 - c0 + under}
    return {
        "start": lo, "size": heap_size, "in_use": heap_size - free, "free": free, "top": top,
        "cached": int(b.chunk[cached].sum()), "cached_chunks": int(cached.sum()), "fastbins": fast_bytes,
        "fastbin_chunks": int(fast.sum()), "live_requested": int(b.size[live].sum()),
        "live_blocks": int(live.sum()), "live_chunks_bytes": int(b.chunk[live].sum()) + absorbed,
        "free_runs": int(len(runs)), "largest_free_run": int(runs.max()) if len(runs) else 0,
        "highest_live": highest, "_runs": (run_at, runs), "_fast": (start, size),
        "_fast_chunks": ((b.ptr[fast] - np.uint64(ch.HEADER)).astype(np.int64), b.chunk[fast]),
    }


def _trim_pages(h: dict[str, Any], page: int, main: bool) -> int:
    """What malloc_trim(0) gives back from this heap: glibc's mtrim over the free chunks after the
    fastbins are consolidated, and (main heap) systrim(0) of the top."""
    run_at, runs = h["_runs"]
    fa, fs = h["_fast_chunks"]
    starts = np.r_[run_at, fa].astype(np.int64)
    sizes = np.r_[runs, fs].astype(np.int64)
    top_start = h["start"] + h["size"] - h["top"]
    if len(starts):  # neighbours merge: fastbin chunks with the free runs beside them and with the top
        o = np.argsort(starts)
        starts, sizes = starts[o], sizes[o]
        ends = starts + sizes
        new = np.r_[True, starts[1:] != ends[:-1]]
        m_start = starts[new]
        m_end = np.maximum.reduceat(ends, np.flatnonzero(new))
        if m_end[-1] == top_start:
            top_start = int(m_start[-1])
            m_start, m_end = m_start[:-1], m_end[:-1]
    else:
        m_start = m_end = np.empty(0, dtype=np.int64)
    psm1 = page - 1
    aligned = (m_start + MALLOC_CHUNK_STRUCT + psm1) & ~psm1
    pages = np.where(m_end > aligned, (m_end - aligned) & ~psm1, 0)
    total = int(pages.sum())
    top = h["start"] + h["size"] - top_start
    if main:  # systrim(0); a thread heap's top is in no bin: mtrim leaves it
        total += max(top - ch.MINSIZE - 1, 0) & ~psm1
    return total


def _public(h: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if h is None else {k: v for k, v in h.items() if not k.startswith("_")}


def account(trace: Trace, ts: int, pid: int | None = None) -> dict[str, Any]:
    """The accounting of ``pid`` (the traced process by default) at absolute time ``ts`` (ns)."""
    m = model(trace, pid)
    tl = m.tl
    brk = _asof(tl.breaks, "brk", ts, tl.start_brk)
    main = _heap(m, tl.start_brk, max(brk, tl.start_brk + 1), brk, ts) if brk > tl.start_brk else None
    arenas = [a for a in (_arena(m, h, ts) for h in m.heaps) if a is not None]
    b = m.blocks
    mm = b.mmapped & (b.opened <= ts) & (b.closed > ts)
    th = thr.at(m.thresholds, ts)
    rss = _asof(tl.rss, "anon", ts, 0) if len(tl.rss) else None

    def chunk_ranges(t: int) -> tuple[np.ndarray, np.ndarray]:
        live = b.mmapped & (b.opened <= t) & (b.closed > t)
        start = (b.ptr[live].astype(np.int64) - ch.HEADER) & ~(m.page - 1)
        return start, start + b.chunk[live]

    res = resident(trace, tl, ts, m.heaps, HEAP_MAX, chunk_ranges, rss)
    # malloc_trim gives back only pages that are resident: no more than the sample found there
    trim_main = _trim_pages(main, m.page, True) if main else 0
    trim_arenas = sum(_trim_pages(a, m.page, False) for a in arenas)
    if res["heap"] is not None:
        trim_main, trim_arenas = min(trim_main, res["heap"]), min(trim_arenas, res["arenas"])
    trim = trim_main + trim_arenas
    heap = _public(main) or {"start": tl.start_brk, "size": max(brk - tl.start_brk, 0), "in_use": 0,
                             "free": max(brk - tl.start_brk, 0), "top": max(brk - tl.start_brk, 0)}
    return {
        "pid": tl.pid,
        "at_s": round((ts - tl.t0) / 1e9, 6),
        "exact": b.mismatches == 0,
        "heap": heap,
        "arenas": {
            "count": len(arenas), "reserved": HEAP_MAX * len(arenas),
            "committed": sum(a["size"] for a in arenas), "in_use": sum(a["in_use"] for a in arenas),
            "free": sum(a["free"] for a in arenas), "cached": sum(a["cached"] for a in arenas),
            "live_requested": sum(a["live_requested"] for a in arenas),
            "heaps": [_public(a) for a in arenas],
        },
        "mmapped_chunks": {"count": int(mm.sum()), "bytes": int(b.chunk[mm].sum()),
                           "live_requested": int(b.size[mm].sum())},
        "thresholds": th.to_json(),
        "malloc_trim_estimate": trim,
        "resident": res,
    }


def last_moment(trace: Trace, pid: int | None = None) -> int:
    """The end of the recording, or, when the process ended, the moment before its address space went."""
    tl = model(trace, pid).tl
    ends = tl.mappings["died"][tl.mappings["ended_by"] == "exit"] if len(tl.mappings) else []
    if len(ends):
        return int(ends.iloc[0]) - 1
    cols = trace.columns
    return int(trace.meta.get("end_ns", cols["ts"][-1] if len(cols) else tl.t0))


def _arena(m: Model, h: int, ts: int) -> dict[str, Any] | None:
    """A thread-arena heap at ``ts``: committed = its accessible part, from the mappings."""
    mp = m.tl.mappings
    alive = mp[(mp["start"] >= h) & (mp["end"] <= h + HEAP_MAX) & (mp["born"] <= ts) & (mp["died"] > ts)]
    if not len(alive[alive["prot"] != 0]):
        return None
    return _heap(m, h, h + HEAP_MAX, _heap_end(m, h, ts), ts)


def _heap_end(m: Model, h: int, ts: int) -> int:
    """Where a thread heap ends (glibc's ``h->size``): grown with mprotect, shrunk (``shrink_heap``) by
    madvise(MADV_DONTNEED) of its end, which leaves the pages accessible."""
    c = m.heap_calls
    c = c[(c[:, 0] <= ts) & (c[:, 2] >= h) & (c[:, 3] <= h + HEAP_MAX)]
    end = h
    for _, kind, start, stop in c.tolist():
        if kind == Kind.MPROTECT:
            end = max(end, stop)
        elif stop >= end > start:
            end = start
    return end
