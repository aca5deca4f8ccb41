"""The accounting of a process whose malloc is not glibc's (jemalloc, tcmalloc, mimalloc).

glibc's chunk model does not apply: their blocks live in regions they map themselves, laid out by
size class. What the trace says of them, at a moment:

- ``mapped``: the address space the allocator's own calls mapped (each successful anonymous
  ``mmap`` made while one of its calls ran on that thread, and the break when its calls grew it:
  tcmalloc takes memory with ``sbrk`` first), less what was unmapped since;
- ``purged``: what it gave back inside those regions with ``madvise`` (DONTNEED, FREE, REMOVE) up
  to then, counted once per call; pages written again since come back without a system call, so
  this says what was returned, not what is still out;
- ``resident``: the Anonymous bytes of those regions in the latest ``/proc/PID/smaps`` sample
  (less what was released after it);
- ``live_requested`` / ``live_blocks``: what the program holds (requested bytes of blocks not freed);
- ``held_beyond_live``: resident minus live: memory in RAM the program has freed or never asked
  for (size-class rounding, the allocator's metadata), which only the allocator can give back.

Checked against the allocators' own figures (``workloads/allocstats.c``): jemalloc's
``stats.mapped + stats.retained`` equals ``mapped`` at every mark; mimalloc's ``current_commit``
equals ``mapped - purged``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tracer import fields as ef
from tracer.analysis.cache import cached
from tracer.analysis.model import Timeline, _enclosing_allocator_call, own_events
from tracer.analysis.residency import _overlap, _ranges, resident
from tracer.decode import MAP_ANONYMOUS
from tracer.events import Kind
from tracer.tracefile import Trace

ARENA_HEAP = 64 << 20  # passed to the residency split, which finds no glibc heaps here


def family_of(trace: Trace) -> str | None:
    """The allocator the recording traced (None: not recorded or not traced)."""
    alloc = (trace.meta.get("backend") or {}).get("allocator") or {}
    return alloc.get("family") if alloc.get("traced") else None


def is_other(trace: Trace) -> bool:
    return family_of(trace) not in (None, "glibc", "unknown")


def _made(trace: Trace, tl: Timeline) -> dict[str, Any]:
    """The mmaps made inside allocator calls (ts, start, end, in time order) and whether an allocator
    call ever grew the break."""
    ev, kind, _ = own_events(trace, tl.pid)
    m = ev[(kind == Kind.MMAP) & ef.ok(ev)]
    m = m[(ef.mmap.flags(m) & np.uint64(MAP_ANONYMOUS)) != 0]
    b = ev[kind == Kind.BRK]
    grew = np.r_[False, b["ret"][1:] > b["ret"][:-1]] if len(b) else np.zeros(0, dtype=bool)
    b = b[grew]
    start = np.r_[ef.mmap.result(m), b["ret"]].astype(np.uint64)
    frame = pd.DataFrame({"ts": np.r_[m["ts"], b["ts"]].astype(np.int64),
                          "tid": np.r_[m["tid"], b["tid"]].astype(np.int64),
                          "call": ["mmap"] * len(m) + ["brk"] * len(b), "start": start, "end": start})
    inside = np.array([x is not None for x in _enclosing_allocator_call(ev, frame)], dtype=bool)
    mine = inside[:len(m)]
    length = ef.page_up(ef.mmap.length(m), tl.page_size).astype(np.int64)
    s = ef.mmap.result(m).astype(np.int64)
    order = np.argsort(m["ts"][mine], kind="stable")
    return {"ts": m["ts"][mine].astype(np.int64)[order], "start": s[mine][order], "end": (s + length)[mine][order],
            "brk": bool(inside[len(m):].any())}


def made(trace: Trace, tl: Timeline) -> dict[str, Any]:
    return cached(trace, ("other-allocator", tl.pid), lambda: _made(trace, tl))


def in_regions(trace: Trace, tl: Timeline, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Which ranges lie in what the allocator's calls mapped (at any time), or in the break it grew."""
    mk = made(trace, tl)
    r = _ranges(mk["start"], mk["end"])
    inside = _overlap(r, start, end) > 0 if len(start) else np.zeros(0, dtype=bool)
    if mk["brk"] and len(tl.breaks):
        inside |= (start >= tl.start_brk) & (end <= int(tl.breaks["brk"].max()))
    return inside


def _regions_at(mk: dict[str, Any], t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(np.searchsorted(mk["ts"], t, side="right"))
    return _ranges(mk["start"][:n], mk["end"][:n])


def account_other(trace: Trace, tl: Timeline, ts: int, brk: int) -> dict[str, Any]:
    """The allocator's figures at ``ts`` (absolute ns); ``brk``: the break then."""
    mk = made(trace, tl)
    r = _regions_at(mk, ts)
    mp = tl.mappings
    mapped = 0
    if len(mp) and len(r[0]):
        alive = mp[(mp["born"] <= ts) & (mp["died"] > ts) & mp["anon"]]
        mapped = int(_overlap(r, alive["start"].to_numpy(np.int64), alive["end"].to_numpy(np.int64)).sum())
    heap = max(brk - tl.start_brk, 0) if mk["brk"] else 0
    rel = tl.releases
    rel = rel[(rel["ts"] <= ts) & (rel["call"] == "madvise")] if len(rel) else rel
    purged = int(_overlap(r, rel["start"].to_numpy(np.int64), rel["end"].to_numpy(np.int64)).sum()) if len(rel) else 0
    if mk["brk"] and len(rel):
        in_heap = (rel["start"].to_numpy(np.int64) >= tl.start_brk) & (rel["end"].to_numpy(np.int64) <= brk)
        purged += int(rel["bytes"].to_numpy(np.int64)[in_heap].sum())
    rss = tl.at(ts)["rss_anon"] if len(tl.rss) else None
    res = resident(trace, tl, ts, [], ARENA_HEAP, lambda t: _regions_at(mk, t)[:2], rss)
    live = tl.live
    j = int(np.searchsorted(live["ts"].to_numpy(np.int64), ts, side="right")) - 1
    live_bytes = int(live["live_bytes"].iloc[j]) if j >= 0 else 0
    live_blocks = int(live["live_blocks"].iloc[j]) if j >= 0 else 0
    held = None
    if res["mmapped_chunks"] is not None:
        held_res = int(res["mmapped_chunks"]) + (int(res["heap"]) if mk["brk"] else 0)
        held = max(held_res - live_bytes, 0)
    else:
        held_res = None
    res = {**res, "allocator": held_res, "arenas": 0 if res["arenas"] is not None else None,
           "mmapped_chunks": 0 if res["mmapped_chunks"] is not None else None}
    if mk["brk"] and res["heap"] is not None:
        res["heap"] = 0  # the break's pages are the allocator's: counted there
    return {
        "family": family_of(trace), "mapped": mapped + heap, "mapped_by_mmap": mapped, "heap": heap,
        "purged": purged, "resident": held_res, "live_requested": live_bytes, "live_blocks": live_blocks,
        "held_beyond_live": held, "resident_split": res,
    }
