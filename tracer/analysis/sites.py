"""Bytes by allocation site: the stacks recorded with ``--stacks`` against the accounting's blocks.

At one moment (the end, or the moment before the process's address space went), for each
recorded stack:

- ``alloc``: the blocks allocated there up to then (count, bytes requested);
- ``inuse``: those still live (count, bytes requested): their sum is the timeline's live bytes;
- ``retained``: the chunk bytes whose last occupant was a block allocated there and freed, that the
  allocator still holds: inside the heap below the break or an accessible part of a thread
  arena's heap, and not given back since (no munmap, madvise or brk shrink over them after that
  block was made). Mmapped blocks go back at their free and are never retained.

A byte's last occupant is the latest block made whose chunk covers it
(:attr:`tracer.analysis.chunks.Blocks`); a release of the range made later than that block wins
over it. Blocks are attributed to the stack id their allocation recorded (``fields.blocks.stack``);
0 means none was recorded.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis.accounting import last_moment, model
from tracer.analysis.allocmodel import opens_and_closes
from tracer.analysis.chunks import HEADER
from tracer.analysis.model import own_events
from tracer.tracefile import Trace

#: the profile's sample types: (type, unit), in the order of :attr:`SiteFigures.values`
SAMPLE_TYPES = (("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"),
                ("inuse_space", "bytes"), ("retained_space", "bytes"))


@dataclass
class Frame:
    address: int
    module: str | None
    build_id: str | None
    offset: int | None  # in the module's file
    function: str | None  # the symbol, without its +offset


@dataclass
class SiteFigures:
    pid: int
    at: int  # ns: the moment
    stacks: dict[int, list[Frame]]  # stack id -> frames, the allocation's caller first
    values: dict[int, list[int]]  # stack id -> one value per SAMPLE_TYPES


def recorded_stacks(trace: Trace) -> dict[str, Any] | None:
    """The stacks the trace recorded (``heapline record --stacks``), or None."""
    st = (trace.meta.get("backend_end") or {}).get("stacks")
    return st if isinstance(st, dict) and isinstance(st.get("stacks"), dict) else None


def frames(st: dict[str, Any], sid: int) -> list[Frame]:
    mods = st.get("modules") or []
    out = []
    for addr, mod, off, sym in st["stacks"].get(str(sid), []):
        m = mods[mod] if isinstance(mod, int) and 0 <= mod < len(mods) else {}
        out.append(Frame(int(addr), m.get("path"), m.get("build_id"), None if off is None else int(off),
                         sym.rsplit("+", 1)[0] if sym else None))
    return out


def site_text(fr: list[Frame], depth: int = 3) -> str:
    """A stack for people: its first ``depth`` frames, the allocation's caller first, each as
    ``function (module)``, or ``module+offset`` where no symbol was found."""
    parts = []
    for f in fr[:depth]:
        mod = os.path.basename(f.module) if f.module else None
        if f.function:
            parts.append(f"{f.function} ({mod or '?'})")
        elif mod and f.offset is not None:
            parts.append(f"{mod}+{f.offset:#x}")
        else:
            parts.append(f"{f.address:#x}")
    return " ← ".join(parts) + (" ← …" if len(fr) > depth else "") if parts else "(no stack recorded)"


def frame_json(f: Frame) -> dict[str, Any]:
    return {"function": f.function, "module": f.module, "offset": f.offset, "address": hex(f.address)}


def block_stack(trace: Trace, pid: int, ptr: int, opened: int) -> list[Frame] | None:
    """The recorded allocation stack of the block at ``ptr`` made at ``opened`` (ns), or None when
    the trace has no stacks or none was recorded for that block."""
    st = recorded_stacks(trace)
    if st is None:
        return None
    b = model(trace, pid).blocks
    k = np.flatnonzero((b.ptr == np.uint64(ptr)) & (b.opened == opened))
    if not len(k):
        return None
    ev, _, _ = own_events(trace, pid)
    sid = int(ef.blocks.stack(ev)[opens_and_closes(ev)[0]][int(k[0])])
    return frames(st, sid) or None if sid else None


def _last_occupants(start: np.ndarray, end: np.ndarray, prio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the union of the ranges [start, end) into pieces, each owned by the covering range of
    the highest ``prio``: (piece starts, piece ends, owner index)."""
    order = np.lexsort((prio, end, start))  # of ranges with the same bounds only the latest matters
    s, e = start[order], end[order]
    last = np.r_[(s[1:] != s[:-1]) | (e[1:] != e[:-1]), True] if len(s) else np.zeros(0, dtype=bool)
    idx = order[last]
    s, e, p = start[idx].tolist(), end[idx].tolist(), prio[idx].tolist()
    bounds = sorted(set(s) | set(e))
    by_start = sorted(range(len(s)), key=lambda i: s[i])
    active: list[tuple[int, int]] = []  # (-prio, range) of the ranges begun, ended ones left lazily
    out_s, out_e, out_o = [], [], []
    j = 0
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        while j < len(by_start) and s[by_start[j]] <= lo:
            heapq.heappush(active, (-p[by_start[j]], by_start[j]))
            j += 1
        while active and e[active[0][1]] <= lo:
            heapq.heappop(active)
        if active:
            owner = int(idx[active[0][1]])
            if out_o and out_o[-1] == owner and out_e[-1] == lo:
                out_e[-1] = hi
            else:
                out_s.append(lo)
                out_e.append(hi)
                out_o.append(owner)
    return np.array(out_s, dtype=np.int64), np.array(out_e, dtype=np.int64), np.array(out_o, dtype=np.int64)


def _inside(lo: np.ndarray, hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray) -> np.ndarray:
    """For each [lo, hi): its bytes inside the (disjoint) ranges [r_lo, r_hi)."""
    out = np.zeros(len(lo), dtype=np.int64)
    for a, b in zip(r_lo.tolist(), r_hi.tolist(), strict=True):
        out += np.maximum(np.minimum(hi, b) - np.maximum(lo, a), 0)
    return out


def site_figures(trace: Trace, pid: int | None = None, at: int | None = None) -> SiteFigures:
    """The figures by allocation site of ``pid`` (the traced process) at ``at`` (the last moment)."""
    m = model(trace, pid)
    tl, b = m.tl, m.blocks
    ts = last_moment(trace, tl.pid) if at is None else at
    ev, _, _ = own_events(trace, tl.pid)
    sid = ef.blocks.stack(ev)[opens_and_closes(ev)[0]].astype(np.int64)
    made = b.opened <= ts
    live = made & (b.closed > ts)
    values: dict[int, list[int]] = {}
    for s in np.unique(sid[made]).tolist():
        mine = sid == s
        a, li = made & mine, live & mine
        values[s] = [int(a.sum()), int(b.size[a].sum()), int(li.sum()), int(b.size[li].sum()), 0]

    # the last occupant of every byte of the heaps: the blocks made by then, and the releases
    heap = made & ~b.mmapped
    rel = tl.releases[tl.releases["ts"] <= ts] if len(tl.releases) else tl.releases
    bi = np.flatnonzero(heap)
    c_lo = (b.ptr[bi] - np.uint64(HEADER)).astype(np.int64)
    r_lo = rel["start"].to_numpy(np.int64) if len(rel) else np.zeros(0, dtype=np.int64)
    r_hi = rel["end"].to_numpy(np.int64) if len(rel) else np.zeros(0, dtype=np.int64)
    r_ts = rel["ts"].to_numpy(np.int64) if len(rel) else np.zeros(0, dtype=np.int64)
    lo, hi, owner = _last_occupants(np.r_[c_lo, r_lo], np.r_[c_lo + b.chunk[bi], r_hi], np.r_[b.opened[bi], r_ts])
    freed = owner < len(bi)
    lo, hi, owner = lo[freed], hi[freed], bi[owner[freed]]
    freed = b.closed[owner] <= ts
    lo, hi, owner = lo[freed], hi[freed], owner[freed]
    # still the allocator's: the main heap below the break, the accessible parts of thread arenas
    brk_ts = tl.breaks["ts"].to_numpy(np.int64)
    j = int(np.searchsorted(brk_ts, ts, side="right")) - 1
    brk = int(tl.breaks["brk"].iloc[j]) if j >= 0 else tl.start_brk
    mp = tl.mappings
    arenas = mp[(mp["what"] == "heap-arena") & (mp["born"] <= ts) & (mp["died"] > ts) & (mp["prot"] != 0)] \
        if len(mp) else mp
    a_lo = np.r_[tl.start_brk, arenas["start"].to_numpy(np.int64) if len(arenas) else []].astype(np.int64)
    a_hi = np.r_[brk, arenas["end"].to_numpy(np.int64) if len(arenas) else []].astype(np.int64)
    kept = _inside(lo, hi, a_lo, a_hi)
    for s, n in zip(sid[owner].tolist(), kept.tolist(), strict=True):
        values[s][4] += n
    st = recorded_stacks(trace) or {"stacks": {}, "modules": []}
    return SiteFigures(tl.pid, ts, {s: frames(st, s) for s in values}, values)
