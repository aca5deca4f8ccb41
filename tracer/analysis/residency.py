"""Resident memory by cause, from the smaps samples in the trace (RESIDENT events).

RSS anon (rss_stat) says how much is resident, not where. The recorder samples /proc/PID/smaps a
few times a second; at a moment ``ts`` the latest sample at or before it gives each mapping's
Anonymous bytes, and each mapping is split between what the accounting knows lies in it:

- ``heap``: the ``[heap]`` mapping (the main arena, between start_brk and the break);
- ``arenas``: glibc's thread-arena heaps (64 MiB reservations, HEAP_MAX aligned);
- ``mmapped_chunks``: chunks glibc mapped for one block each, live at the sample;
- ``stacks``: the main stack and the thread stacks (MAP_STACK mappings);
- ``other``: the rest: the program's own mappings, interpreters' pools, libraries' written pages.

A mapping the kernel merged from several of these (an mmapped chunk next to another anonymous
mapping) gives each known part its own length first, in that order, and the rest to ``other``;
smaps cannot tell pages apart inside one mapping. Memory released after the sample (munmap,
madvise, brk) up to ``ts`` is taken off where it lay: released pages are not resident until
touched again. What was touched after the sample is not known until the next one.

The PAGES records of the same samples say page by page which parts of the heaps are in RAM
(:func:`absent`): what ``malloc_trim`` would give back counts only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis.cache import cached
from tracer.analysis.model import Timeline, own_events
from tracer.events import PAGES_PRESENT, RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_STACK, Kind

CAUSES = ("heap", "arenas", "mmapped_chunks", "stacks", "other")


def samples(trace: Any, pid: int) -> dict[str, np.ndarray]:
    """The RESIDENT records of ``pid`` since its last exec, as arrays in time order (cached)."""

    def compute() -> dict[str, np.ndarray]:
        ev, kind, _ = own_events(trace, pid)
        r = ev[kind == int(Kind.RESIDENT)]
        return {"ts": r["ts"].astype(np.int64), "start": ef.resident.start(r).astype(np.int64),
                "end": ef.resident.end(r).astype(np.int64), "anon": ef.resident.anon(r).astype(np.int64),
                "what": ef.resident.what(r).astype(np.int64)}

    return cached(trace, ("residency", pid), compute)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted, merged ranges and the prefix sums of their lengths."""
    if not len(starts):
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(1, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order].astype(np.int64), ends[order].astype(np.int64)
    e = np.maximum.accumulate(e)
    new = np.r_[True, s[1:] > e[:-1]]
    group = np.cumsum(new) - 1
    ms = s[new]
    me = np.zeros(len(ms), dtype=np.int64)
    np.maximum.at(me, group, e)
    return ms, me, np.r_[0, np.cumsum(me - ms)]


def _overlap(r: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each [lo, hi): the bytes of the ranges ``r`` inside it."""
    s, e, cum = r
    if not len(s):
        return np.zeros(len(lo), dtype=np.int64)
    i0 = np.searchsorted(e, lo, side="right")  # first range ending after lo
    i1 = np.searchsorted(s, hi, side="left")  # ranges starting before hi
    full = cum[np.maximum(i1, i0)] - cum[i0]
    # clip the first and the last range of each window to it
    first = np.minimum(i0, len(s) - 1)
    cut_lo = np.where(i1 > i0, np.maximum(lo - s[first], 0), 0)
    last = np.maximum(i1 - 1, 0)
    cut_hi = np.where(i1 > i0, np.maximum(e[last] - hi, 0), 0)
    return np.maximum(full - cut_lo - cut_hi, 0)


def resident(trace: Any, tl: Timeline, ts: int, heaps: list[int], heap_max: int,
             chunks: Callable[[int], tuple[np.ndarray, np.ndarray]], rss_anon: int | None) -> dict[str, Any]:
    """``resident`` of the accounting at ``ts``: rss_stat's anon and, from the latest sample, its
    causes. ``heaps``: thread-arena heap starts; ``chunks(t)``: (start, end) of the mmapped chunks
    live at ``t``."""
    out: dict[str, Any] = {"anon": rss_anon}
    smp = samples(trace, tl.pid)
    i = int(np.searchsorted(smp["ts"], ts, side="right"))
    if i == 0:
        return {**out, **{c: None for c in CAUSES}, "sampled_at_s": None, "sampled_anon": None}
    t_s = int(smp["ts"][i - 1])
    lo_i = int(np.searchsorted(smp["ts"], t_s, side="left"))
    sel = slice(lo_i, i)
    start, end, anon, what = smp["start"][sel], smp["end"][sel], smp["anon"][sel], smp["what"][sel]

    mp = tl.mappings
    if len(mp):
        alive = (mp["born"] <= t_s) & (mp["died"] > t_s) & (mp["what"] == "stack")
        stack_s, stack_e = mp["start"][alive].to_numpy(np.int64), mp["end"][alive].to_numpy(np.int64)
    else:
        stack_s = stack_e = np.zeros(0, dtype=np.int64)
    hs = np.array([h for h in heaps if _heap_alive(mp, h, heap_max, t_s)], dtype=np.int64)
    known = {
        "arenas": _ranges(hs, hs + heap_max),
        "mmapped_chunks": _ranges(*chunks(t_s)),
        "stacks": _ranges(stack_s, stack_e),
    }
    parts = {c: np.zeros(len(anon), dtype=np.int64) for c in CAUSES}
    left = np.where((what == RESIDENT_HEAP) | (what == RESIDENT_STACK) | (what == RESIDENT_FILE), 0, anon)
    parts["heap"] = np.where(what == RESIDENT_HEAP, anon, 0)
    parts["stacks"] = np.where(what == RESIDENT_STACK, anon, 0)
    parts["other"] = np.where(what == RESIDENT_FILE, anon, 0)
    for cause in ("arenas", "mmapped_chunks", "stacks"):
        take = np.minimum(_overlap(known[cause], start, end), left)
        parts[cause] = parts[cause] + take
        left = left - take
    parts["other"] = parts["other"] + left
    res = {c: int(v.sum()) for c, v in parts.items()}

    rel = tl.releases
    later = rel[(rel["ts"] > t_s) & (rel["ts"] <= ts)] if len(rel) else rel
    for r_start, r_bytes in zip(later["start"].tolist() if len(later) else [],
                                later["bytes"].tolist() if len(later) else [], strict=True):
        cause = _cause_of(int(r_start), tl, known)
        res[cause] = max(res[cause] - int(r_bytes), 0)
    return {**out, **res, "sampled_at_s": round((t_s - tl.t0) / 1e9, 6), "sampled_anon": int(anon.sum())}


def _heap_alive(mp: Any, h: int, heap_max: int, t: int) -> bool:
    """A thread-arena heap is mapped at ``t`` (glibc maps twice the size, then unmaps what is not
    aligned: a start seen once need not be a heap)."""
    if not len(mp):
        return False
    inside = (mp["start"] >= h) & (mp["end"] <= h + heap_max) & (mp["what"] == "heap-arena")
    return bool((inside & (mp["born"] <= t) & (mp["died"] > t)).any())


def _cause_of(addr: int, tl: Timeline, known: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """Where a released range lay."""
    peak = int(tl.breaks["brk"].max()) if len(tl.breaks) else tl.start_brk
    if tl.start_brk <= addr < peak:
        return "heap"
    for cause, (s, e, _) in known.items():
        j = int(np.searchsorted(s, addr, side="right")) - 1
        if j >= 0 and addr < int(e[j]):
            return cause
    return "other"


# ---- pages of the heaps not in RAM (PAGES samples) -----------------------------------------------


@dataclass
class Absent:
    """Ranges of heap pages known not to be in RAM, for each of some moments: the flat, per-moment
    sorted and disjoint ranges ``start``/``end``, ``cum`` the prefix sums of their lengths (one more
    than the ranges), and for moment ``j`` its ranges are ``lo[j]:hi[j]``."""

    start: np.ndarray
    end: np.ndarray
    cum: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def none(cls, moments: int) -> Absent:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, np.zeros(1, dtype=np.int64), np.zeros(moments, np.int64), np.zeros(moments, np.int64))

    def take(self, moments: np.ndarray) -> Absent:
        """The same ranges for some of the moments (their indexes)."""
        return Absent(self.start, self.end, self.cum, self.lo[moments], self.hi[moments])

    def bytes_in(self, j: int, a: int, b: int) -> int:
        """Bytes of moment ``j``'s ranges inside ``[a, b)``."""
        lo, hi = int(self.lo[j]), int(self.hi[j])
        if b <= a or lo >= hi:
            return 0
        r = (self.start[lo:hi], self.end[lo:hi], self.cum[lo:hi + 1] - self.cum[lo])
        return int(_overlap(r, np.array([a]), np.array([b]))[0])


def page_samples(trace: Any, pid: int) -> dict[str, np.ndarray]:
    """The PAGES records of ``pid`` since its last exec, as arrays in time order (cached)."""

    def compute() -> dict[str, np.ndarray]:
        ev, kind, _ = own_events(trace, pid)
        r = ev[kind == int(Kind.PAGES)]
        return {"ts": r["ts"].astype(np.int64), "start": ef.pages.start(r).astype(np.int64),
                "end": ef.pages.end(r).astype(np.int64), "present": ef.pages.what(r) == PAGES_PRESENT}

    return cached(trace, ("pages", pid), compute)


def _subtract(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the ranges ``a`` outside every range of ``b`` (each: starts, ends), sorted and merged."""
    pts = np.r_[a[0], a[1], b[0], b[1]]
    da = np.r_[np.ones(len(a[0]), np.int64), -np.ones(len(a[1]), np.int64), np.zeros(len(b[0]) + len(b[1]), np.int64)]
    db = np.r_[np.zeros(len(a[0]) + len(a[1]), np.int64), np.ones(len(b[0]), np.int64), -np.ones(len(b[1]), np.int64)]
    order = np.argsort(pts, kind="stable")
    pts, ca, cb = pts[order], np.cumsum(da[order]), np.cumsum(db[order])
    inside = (ca > 0) & (cb == 0)  # between pts[i] and pts[i + 1]
    s, e = pts[:-1][inside[:-1]], pts[1:][inside[:-1]]
    keep = e > s
    return _ranges(s[keep], e[keep])[:2]


def absent(trace: Any, pid: int, moments: np.ndarray,
           touched: Callable[[int, int], tuple[np.ndarray, np.ndarray]]) -> Absent:
    """For each of ``moments`` (ascending): the heap pages the latest PAGES sample at or before it
    found not in RAM, less every chunk allocated after that sample (up to the next one: the program
    may have written it). Pages outside what the sample read are not known, so not absent.
    ``touched(a, b)``: (start, end) of the chunks allocated in ``(a, b]``."""
    smp = page_samples(trace, pid)
    times = np.unique(smp["ts"])
    if not len(times):
        return Absent.none(len(moments))
    which = np.searchsorted(times, moments, side="right") - 1
    parts_s, parts_e, counts = [], [], {}
    for k in np.unique(which[which >= 0]).tolist():
        at = smp["ts"] == times[k]
        ext = ~smp["present"] & at
        pres = smp["present"] & at
        gone = _subtract((smp["start"][ext], smp["end"][ext]), (smp["start"][pres], smp["end"][pres]))
        until = int(times[k + 1]) if k + 1 < len(times) else int(np.iinfo(np.int64).max)
        s, e = _subtract(gone, touched(int(times[k]), until))
        parts_s.append(s)
        parts_e.append(e)
        counts[k] = len(s)
    offsets, total = {}, 0
    for k, n in counts.items():
        offsets[k] = total
        total += n
    start = np.concatenate(parts_s) if parts_s else np.zeros(0, np.int64)
    end = np.concatenate(parts_e) if parts_e else np.zeros(0, np.int64)
    lo = np.array([offsets.get(int(k), 0) for k in which.tolist()], dtype=np.int64)
    hi = np.array([offsets[int(k)] + counts[int(k)] if k >= 0 else 0 for k in which.tolist()], dtype=np.int64)
    lo = np.where(which >= 0, lo, 0)
    return Absent(start, end, np.r_[0, np.cumsum(end - start)].astype(np.int64), lo, hi)
