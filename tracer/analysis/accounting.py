"""The heap accounting: what the allocator's memory is at one instant, chunk by chunk.

For the main heap (``[start_brk, break)``) and every thread-arena heap (a 64 MiB glibc reservation,
committed up to what ``mprotect`` made accessible) this lays the chunks occupied at that instant
(live blocks, chunks in a tcache or a fastbin: :mod:`tracer.analysis.chunks`) along the heap, and
reads off what ``mallinfo2`` would say: the gaps between occupied chunks are free chunks in glibc's
bins (``ordblks`` - 1 of them), the space above the highest occupied chunk is the top chunk
(``keepcost``), fastbin chunks are free (``fsmblks``), and everything else is in use (``uordblks``:
live chunks with their headers, cached chunks, the tcache's own chunk, the arena's header).
Mmapped chunks are counted apart (``hblkhd``), the thresholds as in force then. The heaps are
laid out by :mod:`tracer.analysis.heapscan` at all the moments asked at once (:func:`account_at`;
the phases ask for hundreds).

What ``malloc_trim(0)`` would give back is glibc's own rule (``mtrim``, ``systrim``): in each free
chunk, after consolidating the fastbins, the whole pages past its first 48 bytes; of the main
heap's top, all whole pages but one chunk's worth; pages the recorder's pagemap samples found not in
RAM (and no block allocated since could have touched) are not counted. Where the model met a call it could not place
(a tcache or fastbin hit at another address than glibc's order gives), ``exact`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis import chunks as ch
from tracer.analysis import heapscan, otheralloc
from tracer.analysis import thresholds as thr
from tracer.analysis.allocmodel import index_dtype, pairing
from tracer.analysis.cache import cached
from tracer.analysis.model import Timeline, build, own_events
from tracer.analysis.residency import Absent, absent, resident
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
    chunks: dict[int, HeapChunks] = field(default_factory=dict)  # heap start -> its chunks in address order
    mapped: dict[int, np.ndarray] = field(default_factory=dict)  # thread heap -> (born, died, prot) of its mappings
    mmapped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # blocks mmapped
    by_opened: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # other blocks, by time opened

    def touched(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The pages the chunks allocated in ``(a, b]`` lie on, with the next chunk's size field
        glibc writes: (starts, ends)."""
        o = self.by_opened
        t = self.blocks.opened[o]
        sel = o[np.searchsorted(t, a, side="right"):np.searchsorted(t, b, side="right")]
        s = self.blocks.ptr[sel].astype(np.int64) - ch.HEADER
        e = s + self.blocks.chunk[sel] + ch.HEADER
        return s & ~(self.page - 1), (e + self.page - 1) & ~(self.page - 1)


@dataclass
class HeapChunks:
    """The non-mmapped blocks of one heap, by chunk start (then time opened)."""

    index: np.ndarray  # into Model.blocks
    start: np.ndarray
    first_opened: np.ndarray  # the lowest ``opened`` of the chunks at and below each (to find the first chunk)
    earliest: int  # the block opened first (-1 for none)

    @classmethod
    def of(cls, b: ch.Blocks, sel: np.ndarray) -> HeapChunks:
        idx = np.flatnonzero(sel).astype(index_dtype(len(sel)))
        start = (b.ptr[idx] - np.uint64(ch.HEADER)).astype(np.int64)
        order = np.argsort(start, kind="stable")
        idx, start = idx[order], start[order]
        first = np.minimum.accumulate(b.opened[idx]) if len(idx) else np.zeros(0, dtype=np.int64)
        return cls(idx, start, first, int(idx[np.argmin(b.opened[idx])]) if len(idx) else -1)


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
    b = ch.blocks(ev, pairing(trace, tl.pid))
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
    out = Model(tl, b, thr.history(ev, b, env, tl.t0), heaps, page, calls, exits)
    out.chunks[tl.start_brk] = HeapChunks.of(b, ~b.mmapped & (arena == 0) & (b.ptr >= np.uint64(tl.start_brk)))
    for i, h in enumerate(heaps):
        out.chunks[h] = HeapChunks.of(b, ~b.mmapped & (arena == i + 1))
        inside = (mp["start"] >= h) & (mp["end"] <= h + HEAP_MAX) if len(mp) else []
        out.mapped[h] = (np.stack([mp["born"][inside].to_numpy(np.int64), mp["died"][inside].to_numpy(np.int64),
                                   mp["prot"][inside].to_numpy(np.int64)], axis=1) if len(mp)
                         else np.zeros((0, 3), dtype=np.int64))
    out.mmapped = np.flatnonzero(b.mmapped)
    heaped = np.flatnonzero(~b.mmapped).astype(index_dtype(len(b)))
    out.by_opened = heaped[np.argsort(b.opened[heaped], kind="stable")]
    return out


def _arena_of(ptr: np.ndarray, heaps: list[int]) -> np.ndarray:
    """0 for the main heap, else 1 + the index of the thread-arena heap holding the pointer."""
    out = np.zeros(len(ptr), dtype=np.int32)  # fewer arenas than 2^31
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


def _heaps(m: Model, lo: int, hi: np.ndarray, end: np.ndarray, ts: np.ndarray,
           gone: Absent) -> list[dict[str, Any] | None]:
    """The figures of one heap ``[lo, end)`` at each moment ``ts`` (ascending; ``hi``: where the
    pointers of its chunks end then; ``end``: where the heap ends then; ``gone``: its pages not in RAM)."""
    b = m.blocks
    hc = m.chunks[lo]
    idx = hc.index
    # the lowest chunk opened by then: below it are glibc's own (the tcache, an arena's header)
    at = np.searchsorted(-hc.first_opened, -ts, side="left")
    ever = at < len(idx)
    first = np.where(ever, hc.start[np.minimum(at, max(len(idx) - 1, 0))] if len(idx) else 0, 0)
    ever &= first + ch.HEADER < hi
    main = lo == m.tl.start_brk
    own_end = np.where(ever, first, lo + TCACHE_STRUCT)
    if not main and hc.earliest >= 0:  # a thread heap: its first thread's tcache goes when that thread ends
        ended = m.exits.get(int(b.open_tid[hc.earliest]), ch.NEVER) <= ts
        own_end = np.where(ended & ever, first - TCACHE_STRUCT, own_end)
    f = heapscan.scan(hc.start, b.chunk, b.opened, b.occupied_until, b.closed, b.went, b.size, ts, hi, own_end, end,
                      m.page, ch.CACHED, ch.FAST, (gone.start, gone.end, gone.cum, gone.lo, gone.hi), idx=idx)
    out: list[dict[str, Any] | None] = []
    for j in range(len(ts)):
        if not ever[j] and not (main and end[j] > lo):
            out.append(None)
            continue
        heap_size = int(end[j]) - lo
        top = max(int(end[j]) - int(f["top_from"][j]), 0)
        free = top + int(f["runs_bytes"][j]) + int(f["fast_bytes"][j])
        highest = None
        i = int(f["highest"][j])
        if i >= 0 and int(f["highest_end"][j]) == int(f["top_from"][j]):
            k = int(idx[i])
            c0, c1 = int(b.ptr[k]) - ch.HEADER, int(f["highest_end"][j])
            under = int(f["highest_under"][j])
            highest = {"address": hex(int(b.ptr[k])), "size": int(b.size[k]), "chunk": int(b.chunk[k]),
                       "allocated_at_ns": int(b.opened[k]), "free_below": under, "top_if_freed": top + c1 - c0 + under}
        trim = int(f["trim_pages"][j])
        if main:  # systrim: the top's whole pages but one chunk's worth, from the end
            extra = max(int(end[j]) - int(f["trim_top_start"][j]) - ch.MINSIZE - 1, 0) & ~(m.page - 1)
            trim += extra - gone.bytes_in(j, int(end[j]) - extra, int(end[j]))
        out.append({
            "start": lo, "size": heap_size, "in_use": heap_size - free, "free": free, "top": top,
            "cached": int(f["cached_bytes"][j]), "cached_chunks": int(f["cached_chunks"][j]),
            "fastbins": int(f["fast_bytes"][j]), "fastbin_chunks": int(f["fast_chunks"][j]),
            "live_requested": int(f["live_requested"][j]), "live_blocks": int(f["live_blocks"][j]),
            "live_chunks_bytes": int(f["live_chunk_bytes"][j]) + int(f["absorbed"][j]),
            "free_runs": int(f["runs"][j]), "largest_free_run": int(f["largest_run"][j]),
            "highest_live": highest, "_trim": trim,
        })
    return out


def _public(h: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if h is None else {k: v for k, v in h.items() if not k.startswith("_")}


def account(trace: Trace, ts: int, pid: int | None = None) -> dict[str, Any]:
    """The accounting of ``pid`` (the traced process by default) at absolute time ``ts`` (ns)."""
    return account_at(trace, [ts], pid)[0]


def account_at(trace: Trace, moments: list[int] | np.ndarray, pid: int | None = None) -> list[dict[str, Any]]:
    """The accounting of ``pid`` at each of ``moments`` (absolute ns), the heaps scanned once for all."""
    m = model(trace, pid)
    tl = m.tl
    ts = np.asarray(moments, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    sts = ts[order]
    t_brk = tl.breaks["ts"].to_numpy(np.int64)
    j = np.searchsorted(t_brk, sts, side="right") - 1
    brk = np.where(j >= 0, tl.breaks["brk"].to_numpy(np.int64)[np.maximum(j, 0)], tl.start_brk) if len(t_brk) \
        else np.full(len(sts), tl.start_brk, dtype=np.int64)
    if otheralloc.is_other(trace):  # jemalloc, tcmalloc, mimalloc: their own regions, not glibc's heap
        out = [{}] * len(ts)
        for k, (t, brk_k) in enumerate(zip(sts.tolist(), brk.tolist(), strict=True)):
            out[int(order[k])] = _other_figures(trace, m, int(t), int(brk_k))
        return out
    gone = absent(trace, tl.pid, sts, m.touched)
    main = _heaps(m, tl.start_brk, np.maximum(brk, tl.start_brk + 1), brk, sts, gone)
    main = [h if b > tl.start_brk else None for h, b in zip(main, brk.tolist(), strict=True)]
    arenas: list[list[dict[str, Any]]] = [[] for _ in sts]
    for h in m.heaps:
        for k, a in zip(*_arena(m, h, sts, gone), strict=True):
            if a is not None:
                arenas[k].append(a)
    out: list[dict[str, Any]] = [{}] * len(ts)
    for k, (t, main_k, arenas_k, brk_k) in enumerate(zip(sts.tolist(), main, arenas, brk.tolist(), strict=True)):
        out[int(order[k])] = _figures(trace, m, int(t), main_k, arenas_k, int(brk_k))
    return out


def _figures(trace: Trace, m: Model, ts: int, main: dict[str, Any] | None, arenas: list[dict[str, Any]],
             brk: int) -> dict[str, Any]:
    tl = m.tl
    b = m.blocks
    mmi = m.mmapped
    mm = mmi[(b.opened[mmi] <= ts) & (b.closed[mmi] > ts)]
    th = thr.at(m.thresholds, ts)
    rss = _asof(tl.rss, "anon", ts, 0) if len(tl.rss) else None

    def chunk_ranges(t: int) -> tuple[np.ndarray, np.ndarray]:
        live = mmi[(b.opened[mmi] <= t) & (b.closed[mmi] > t)]
        start = (b.ptr[live].astype(np.int64) - ch.HEADER) & ~(m.page - 1)
        return start, start + b.chunk[live]

    res = resident(trace, tl, ts, m.heaps, HEAP_MAX, chunk_ranges, rss)
    # malloc_trim gives back only pages that are resident: no more than the sample found there
    trim_main = main["_trim"] if main else 0
    trim_arenas = sum(a["_trim"] for a in arenas)
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
        "mmapped_chunks": {"count": int(len(mm)), "bytes": int(b.chunk[mm].sum()),
                           "live_requested": int(b.size[mm].sum())},
        "thresholds": th.to_json(),
        "malloc_trim_estimate": trim,
        "resident": res,
    }


def _other_figures(trace: Trace, m: Model, ts: int, brk: int) -> dict[str, Any]:
    """The accounting when malloc is another allocator's: its regions (tracer.analysis.otheralloc);
    glibc's heap, arenas, mmapped chunks and thresholds hold nothing of the program's."""
    tl = m.tl
    a = otheralloc.account_other(trace, tl, ts, brk)
    res = a.pop("resident_split")
    size = max(brk - tl.start_brk, 0)
    return {
        "pid": tl.pid,
        "at_s": round((ts - tl.t0) / 1e9, 6),
        "exact": True,
        "allocator": a,
        "heap": {"start": tl.start_brk, "size": size, "grown_by": a["family"] if a["heap"] else "glibc"},
        "arenas": {"count": 0, "reserved": 0, "committed": 0, "in_use": 0, "free": 0, "cached": 0,
                   "live_requested": 0, "heaps": []},
        "mmapped_chunks": {"count": 0, "bytes": 0, "live_requested": 0},
        "thresholds": None,
        "malloc_trim_estimate": 0,
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


def _arena(m: Model, h: int, ts: np.ndarray, gone: Absent) -> tuple[list[int], list[dict[str, Any] | None]]:
    """A thread-arena heap at the moments ``ts`` where some of it is accessible (committed = its
    accessible part, from the mappings): (their places in ``ts``, their figures)."""
    mp = m.mapped[h]
    at = [k for k, t in enumerate(ts.tolist())
          if ((mp[:, 0] <= t) & (mp[:, 1] > t) & (mp[:, 2] != 0)).any()]
    if not at:
        return [], []
    sel = ts[at]
    end = np.array([_heap_end(m, h, int(t)) for t in sel.tolist()], dtype=np.int64)
    return at, _heaps(m, h, np.full(len(sel), h + HEAP_MAX, dtype=np.int64), end, sel, gone.take(np.array(at)))


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


def mmapped_chunks(trace: Trace, pid: int | None = None) -> dict[int, list[tuple[int, int]]]:
    """The blocks glibc mapped one by one, by the start of their mapping (the chunk, HEADER bytes
    before the pointer): [(allocated at ns, bytes requested)], oldest first."""
    if otheralloc.is_other(trace):
        return {}
    b = model(trace, pid).blocks
    k = np.flatnonzero(b.mmapped)
    out: dict[int, list[tuple[int, int]]] = {}
    for i in k[np.argsort(b.opened[k], kind="stable")].tolist():
        out.setdefault(int(b.ptr[i]) - ch.HEADER, []).append((int(b.opened[i]), int(b.size[i])))
    return out


def main_free_runs(trace: Trace, ts: int, pid: int | None = None) -> np.ndarray:
    """The free chunks in the bins of the main heap at ``ts`` (absolute ns): (start, end) rows in
    address order, below the top; empty for other allocators or no heap. Their count and bytes are
    the accounting's ``free_runs`` and ``free - top - fastbins``."""
    if otheralloc.is_other(trace):
        return np.zeros((0, 2), dtype=np.int64)
    m = model(trace, pid)
    tl, b, lo = m.tl, m.blocks, m.tl.start_brk
    hc = m.chunks.get(lo)
    brk = _asof(tl.breaks, "brk", ts, lo) if len(tl.breaks) else lo
    if hc is None or not len(hc.index) or brk <= lo:
        return np.zeros((0, 2), dtype=np.int64)
    idx = hc.index
    hi = max(brk, lo + 1)
    at = int(np.searchsorted(-hc.first_opened, -ts, side="left"))  # as _heaps finds glibc's own chunks' end
    if at >= len(idx) or int(hc.start[at]) + ch.HEADER >= hi:
        return np.zeros((0, 2), dtype=np.int64)
    return heapscan.free_runs(hc.start, b.chunk, b.opened, b.occupied_until, ts, hi, int(hc.start[at]), idx=idx)
