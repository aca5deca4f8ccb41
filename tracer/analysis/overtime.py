"""Resident memory by cause over time: the accounting (:mod:`tracer.analysis.accounting`) taken at
evenly spaced moments and at the phases' moments, each split into the layers of :data:`LAYERS`.

Every byte of RSS anon is in one layer. The residency samples say how much of each region is in
RAM (the main heap, the thread-arena heaps, mmapped chunks, stacks, the rest); the accounting says
what the allocator's memory in a heap is (live blocks, their headers and rounding, cached and free
chunks, the top). Where a heap has fewer bytes in RAM than the allocator's memory in it, the
resident bytes are given to the parts in the order of :data:`LAYERS` (what is in use was written;
free chunks and the top are where untouched, trimmed and madvised pages lie). Without residency
samples the heap parts are its address space, and the regions that only samples tell apart are
left out (``sampled`` is false).

For jemalloc, tcmalloc and mimalloc the allocator's memory is its own regions: live, and what it
holds beyond live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer.analysis.accounting import account_at, last_moment, model
from tracer.analysis.phases import moments as phase_moments
from tracer.tracefile import Trace

EVEN = 400

#: layer -> what it is (bottom of the stack first)
LAYERS: dict[str, str] = {
    "live": "bytes the program asked for and has not freed",
    "allocator overhead": "chunk headers and rounding of live blocks, and the allocator's own structures",
    "cached": "freed chunks waiting in a tcache or a fastbin, not merged into free space",
    "free below the highest live chunk": "free chunks in the main heap that a live block above keeps from "
                                         "the top",
    "top": "the free space at the end of the main heap, above the highest chunk in use",
    "free in thread arenas": "free and cached chunks of glibc's thread-arena heaps",
    "held beyond live": "what another allocator (jemalloc, tcmalloc, mimalloc) keeps in RAM beyond live blocks",
    "mmapped chunks": "blocks the allocator mapped one by one (above the mmap threshold), with their rounding",
    "the program's own mappings": "anonymous memory the program (or a library) mapped itself, and glibc's "
                                  "heap when another allocator is in use",
    "stacks": "thread stacks",
}


@dataclass
class OverTime:
    ts: np.ndarray  # moments, trace clock ns, ascending
    layers: dict[str, np.ndarray]  # LAYERS name -> bytes at each moment (only layers ever non-zero)
    rss_anon: np.ndarray  # RSS anon at each moment (-1: no sample yet)
    footprint: np.ndarray  # address space: heap + anonymous mappings, at each moment
    sampled: bool  # residency samples split the regions


def _fill(budget: int | None, parts: list[int]) -> list[int]:
    """The parts, each cut to what is left of ``budget`` (None: no cut), in order."""
    if budget is None:
        return [max(p, 0) for p in parts]
    out = []
    for p in parts:
        take = min(max(p, 0), budget)
        out.append(take)
        budget -= take
    return out


def _budgets(rss: int | None, sampled: dict[str, int], caps: dict[str, int], order: tuple[str, ...],
             rest: str) -> dict[str, int | None]:
    """Resident bytes per pool: the latest sample's, moved to RSS anon now. What RSS anon has grown
    by since the sample goes to the pools in ``order``, each up to its address space (``caps``),
    then to ``rest``; what it has shrunk by comes off ``rest``, then the pools in reverse order."""
    if rss is None:
        return {**{p: None for p in order}, rest: sampled.get(rest, 0)}
    out = {p: min(sampled.get(p, 0), caps[p]) for p in order}
    out[rest] = sampled.get(rest, 0)
    change = rss - sum(out.values()) - sum(v for k, v in sampled.items() if k not in out)
    for p in order:
        if change <= 0:
            break
        add = min(change, caps[p] - out[p])
        out[p] += add
        change -= add
    out[rest] += max(change, 0)
    for p in (rest, *reversed(order)):
        if change >= 0:
            break
        take = min(-change, out[p])
        out[p] -= take
        change += take
    return out


def _sample(res: dict[str, Any], *causes: str) -> dict[str, int]:
    return {c: int(res.get(c) or 0) for c in causes}


def split(acc: dict[str, Any]) -> dict[str, int]:
    """One accounting as bytes per layer (their sum is RSS anon when it is known)."""
    res = acc["resident"]
    rss = res.get("anon")
    out = dict.fromkeys(LAYERS, 0)
    other = acc.get("allocator")
    if other is not None:
        cap = max(int(other["mapped"]) - int(other["purged"]), 0)
        got = _sample(res, "allocator", "stacks", "other", "heap")
        got["other"] += got.pop("heap")  # glibc's heap holds none of the program's blocks
        b = _budgets(rss, got, {"allocator": cap}, ("allocator",), "other")
        held = cap if b["allocator"] is None else b["allocator"]
        live = min(int(other["live_requested"]), held)
        out.update({"live": live, "held beyond live": held - live, "the program's own mappings": b["other"] or 0,
                    "stacks": got["stacks"]})
        return out
    h, ar, mm = acc["heap"], acc["arenas"], acc["mmapped_chunks"]
    heap_parts = [int(h.get("live_requested", 0)), int(h.get("in_use", 0)) - int(h.get("cached", 0))
                  - int(h.get("live_requested", 0)), int(h.get("cached", 0)) + int(h.get("fastbins", 0)),
                  int(h.get("free", 0)) - int(h.get("top", 0)) - int(h.get("fastbins", 0)), int(h.get("top", 0))]
    arena_parts = [int(ar["live_requested"]), int(ar["in_use"]) - int(ar["cached"]) - int(ar["live_requested"]),
                   int(ar["free"]) + int(ar["cached"])]
    caps = {"heap": sum(max(p, 0) for p in heap_parts), "arenas": sum(max(p, 0) for p in arena_parts),
            "mmapped_chunks": int(mm["bytes"])}
    got = _sample(res, "heap", "arenas", "mmapped_chunks", "stacks", "other")
    b = _budgets(rss, got, caps, ("heap", "arenas", "mmapped_chunks"), "other")
    live_h, over_h, cache_h, below_h, top_h = _fill(b["heap"], heap_parts)
    live_a, over_a, free_a = _fill(b["arenas"], arena_parts)
    out.update({"live": live_h + live_a, "allocator overhead": over_h + over_a, "cached": cache_h,
                "free below the highest live chunk": below_h, "top": top_h, "free in thread arenas": free_a,
                "mmapped chunks": caps["mmapped_chunks"] if b["mmapped_chunks"] is None else b["mmapped_chunks"],
                "the program's own mappings": b["other"] or 0, "stacks": got["stacks"]})
    return out


def over_time(trace: Trace, pid: int | None = None, even: int = EVEN) -> OverTime | None:
    """The layers at ``even`` evenly spaced moments over the process's life and at its phases'
    moments; None when no allocator call was traced (there is nothing to account)."""
    m = model(trace, pid)
    if not len(m.blocks):
        return None
    t0, end = m.tl.t0, last_moment(trace, pid)
    ts = np.unique(np.r_[np.linspace(t0, end, even).astype(np.int64), phase_moments(trace, pid)])
    accs = account_at(trace, ts, pid)
    rows = [split(a) for a in accs]
    layers = {name: np.array([r[name] for r in rows], dtype=np.int64) for name in LAYERS}
    layers = {k: v for k, v in layers.items() if v.any()}
    rss = np.array([a["resident"]["anon"] if a["resident"]["anon"] is not None else -1 for a in accs],
                   dtype=np.int64)
    sampled = any(a["resident"].get("heap") is not None for a in accs)
    return OverTime(ts, layers, rss, m.tl.series_at(ts)["footprint"], sampled)
