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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis.cache import cached
from tracer.analysis.model import Timeline, own_events
from tracer.events import RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_STACK, Kind

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
