"""Phases: the spans of the recording in which memory the program freed stayed with the allocator.

The accounting (:func:`tracer.analysis.accounting.account`) is taken at evenly spaced moments and
at every allocator call that released memory; *kept* is what glibc holds that the program freed:
free chunks and the top of every heap, plus chunks waiting in a tcache, and at most what is
resident beyond the allocator's memory in use (RssAnon minus in-use chunks and mmapped chunks), so
pages released by ``madvise`` or a trim are not counted as kept. A phase is a run of moments
where kept stays at or above ``max(1 MiB, a quarter of its peak)``; each gets its figures at its
peak, what made up the memory kept (the top, free chunks between live blocks, fastbins, tcache,
thread arenas) and what ended it (a release, reuse, the exit, or the end of the recording).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer.analysis.accounting import account_at, last_moment, model
from tracer.tracefile import Trace

SAMPLES = 48
MIN_KEPT = 1 << 20


@dataclass
class Phase:
    start: int  # ns
    end: int
    peak_at: int
    last_kept: int  # the last moment it was still kept (ns): what ended it lies between this and ``end``
    kept: int  # bytes at the peak
    parts: dict[str, int]  # what the kept bytes were, largest first
    accounting: dict[str, Any]  # at the peak


#: the parts of what is kept, in the order :func:`kept_parts` gives them
PARTS = ("top of the main heap", "free chunks between live blocks", "fastbins", "tcache", "thread-arena heaps")


def kept_parts(acc: dict[str, Any]) -> dict[str, int]:
    """Every part of what the allocator holds that the program freed (:data:`PARTS`), in bytes."""
    h, ar = acc["heap"], acc["arenas"]
    fast = h.get("fastbins", 0) + sum(x.get("fastbins", 0) for x in ar["heaps"])
    values = (h.get("top", 0), h.get("free", 0) - h.get("top", 0) - h.get("fastbins", 0), fast,
              h.get("cached", 0) + ar.get("cached", 0),
              ar.get("free", 0) - sum(x.get("fastbins", 0) for x in ar["heaps"]))
    return {name: int(v) for name, v in zip(PARTS, values, strict=True)}


def kept(acc: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """What the allocator holds that the program freed, and its parts."""
    other = acc.get("allocator")
    if other is not None:  # another allocator: what it holds in RAM beyond the live blocks
        held = int(other["held_beyond_live"] or 0)
        return held, ({f"{other['family']}'s regions": held} if held else {})
    h, ar = acc["heap"], acc["arenas"]
    parts = kept_parts(acc)
    total = sum(v for v in parts.values() if v > 0)
    rss = acc["resident"].get("anon")
    if rss is not None:  # resident only: what madvise or trimming released is not kept
        held = h.get("in_use", 0) + ar.get("in_use", 0) + acc["mmapped_chunks"]["bytes"]
        total = min(total, max(rss - held + h.get("cached", 0) + ar.get("cached", 0), 0))
    return total, {k: int(v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0 and v >= total // 100}


def moments(trace: Trace, pid: int | None = None) -> np.ndarray:
    """When to take the accounting: evenly from the first allocator call to the end, and just before
    and after every release inside an allocator call."""
    m = model(trace, pid)
    b = m.blocks
    if not len(b):
        return np.empty(0, dtype=np.int64)
    end = last_moment(trace, pid)
    start = int(b.opened.min())
    ts = np.linspace(start, end, SAMPLES).astype(np.int64)
    rel = m.tl.releases
    inside = rel[rel["inside"].notna()]["ts"].to_numpy(np.int64)[:200]
    return np.unique(np.r_[ts, inside - 1, inside + 1].clip(start, end))


def phases(trace: Trace, pid: int | None = None) -> list[Phase]:
    ts = moments(trace, pid)
    if len(ts) < 2:
        return []
    accs = account_at(trace, ts, pid)
    k = np.array([kept(a)[0] for a in accs], dtype=np.int64)
    floor = max(MIN_KEPT, int(k.max()) // 4)
    on = k >= floor
    out = []
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):  # runs [lo, hi) of moments
        if hi - lo < 2:  # one moment is not a span
            continue
        peak = lo + int(np.argmax(k[lo:hi]))
        end = int(ts[hi]) if hi < len(ts) else int(ts[-1])
        out.append(Phase(int(ts[lo]), end, int(ts[peak]), int(ts[hi - 1]), int(k[peak]), kept(accs[peak])[1],
                         accs[peak]))
    return out
