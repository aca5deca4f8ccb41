"""Findings about memory that did come back while the program ran, and about who held it.

- ``GIVEN_BACK_WHILE_RUNNING``: what went back to the kernel before the exit, by path: inside
  ``free()`` (glibc trimming the heap top with brk shrinks, unmapping mmapped chunks), inside
  ``malloc_trim``, inside other allocator calls, and by the program's own calls outside the
  allocator (its own munmap/madvise/brk, an interpreter's pools, thread stacks). Every release is
  a syscall strace shows; which call it happened in is the model's (``model._enclosing_allocator_call``).
- ``CHILD_HOLDS_MOST``: a traced child process whose resident memory peaked above the traced
  process's own (a compiler driver's ``cc1``, a shell's job): its pid and peak, checkable in
  ``/proc/PID/status`` while it runs, and ``explain --pid`` for its own findings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tracer import fields as ef
from tracer.analysis.finding import Finding, kib, rel_s
from tracer.analysis.model import Timeline
from tracer.columns import Events
from tracer.events import Kind

GIVEN_BACK_MIN = 256 << 10
CHILD_MIN = 1 << 20
FREE_CALLS = ("free", "delete", "realloc", "reallocarray")


def _calls(part: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in part["call"].value_counts(sort=False).items()}


def _n(count: int, what: str, many: str | None = None) -> str:
    return f"{count:,} {what if count == 1 else many or what + 's'}"


def accessible(rel: pd.DataFrame, mp: pd.DataFrame) -> np.ndarray:
    """The bytes of each release that could hold memory: a munmap of a PROT_NONE reservation (the
    unaligned halves of a thread arena's first mapping) gives back address space, not memory."""
    out = rel["bytes"].to_numpy(np.int64).copy()
    unmapped = np.flatnonzero((rel["call"] == "munmap").to_numpy())
    if not len(unmapped) or not len(mp):
        return out
    gone = mp[(mp["ended_by"] == "munmap") & (mp["prot"] != 0)]
    by_ts = {int(t): g for t, g in gone.groupby("died")}
    for i in unmapped.tolist():
        g = by_ts.get(int(rel["ts"].iloc[i]))
        lo, hi = int(rel["start"].iloc[i]), int(rel["end"].iloc[i])
        if g is None:
            out[i] = 0
            continue
        s, e = g["start"].to_numpy(np.int64), g["end"].to_numpy(np.int64)
        out[i] = int(np.maximum(np.minimum(e, hi) - np.maximum(s, lo), 0).sum())
    return out


def given_back(trace: Any, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    rel = tl.releases
    # only where the allocator's calls were traced and run on the program's threads: jemalloc and
    # tcmalloc purge from their own background threads, outside any call
    if not len(rel) or family not in (None, "glibc") or not (ev["kind"] >= Kind.MALLOC).any():
        return []
    rel = rel.assign(bytes=accessible(rel, tl.mappings))
    rel = rel[rel["bytes"] > 0]
    total = int(rel["bytes"].sum())
    if total < GIVEN_BACK_MIN:
        return []
    inside = rel["inside"].fillna("").astype(str)
    paths = {
        "free": rel[inside.isin(FREE_CALLS)],
        "malloc_trim": rel[inside == "malloc_trim"],
        "other_allocator_calls": rel[(inside != "") & ~inside.isin(FREE_CALLS) & (inside != "malloc_trim")],
        "program": rel[inside == ""],
    }
    by = {k: {"bytes": int(p["bytes"].sum()), "calls": _calls(p),
              "bytes_by_call": {str(c): int(v) for c, v in p.groupby("call")["bytes"].sum().items()}}
          for k, p in paths.items() if len(p)}
    words = []
    if "free" in by:
        c = by["free"]["calls"]
        how = [_n(c[k], one, many) for k, one, many in (
            ("brk", "brk shrink of the heap top", "brk shrinks of the heap top"),
            ("munmap", "munmap of an mmapped chunk", "munmaps of mmapped chunks"),
            ("madvise", "madvise", "madvise calls"), ("mremap", "mremap shrink", None)) if k in c]
        words.append(f"{kib(by['free']['bytes'])} inside free() ({', '.join(how)})")
    if "malloc_trim" in by:
        words.append(f"{kib(by['malloc_trim']['bytes'])} inside malloc_trim")
    if "other_allocator_calls" in by:
        words.append(f"{kib(by['other_allocator_calls']['bytes'])} inside other allocator calls")
    if "program" in by:
        c = by["program"]["calls"]
        calls = ", ".join(_n(v, k) for k, v in sorted(c.items()))
        words.append(f"{kib(by['program']['bytes'])} by {calls} outside the allocator (the program's own "
                     "mappings, or its loader's or runtime's: an interpreter's pools, thread stacks)")
    first, last = int(rel["ts"].min()), int(rel["ts"].max())
    msg = (f"{kib(total)} went back to the kernel while the process ran ({rel_s(first, tl.t0):.3f} to "
           f"{rel_s(last, tl.t0):.3f} s): {'; '.join(words)}.")
    return [Finding("GIVEN_BACK_WHILE_RUNNING", msg, {"bytes": total, "by": by, "first_s": rel_s(first, tl.t0),
                                                      "last_s": rel_s(last, tl.t0)}, first)]


def peaks(cols: Events) -> pd.DataFrame:
    """Each process's highest resident anonymous memory and when (RSS samples; pid, peak, ts)."""
    rss = cols[cols["kind"] == int(Kind.RSS)]
    if not len(rss):
        return pd.DataFrame({"pid": [], "peak": [], "ts": []})
    high = np.maximum(ef.rss.anon(rss), ef.rss.anon_high(rss)).astype(np.int64)
    frame = pd.DataFrame({"pid": rss["pid"].astype(np.int64), "peak": high, "ts": rss["ts"].astype(np.int64)})
    return frame.loc[frame.groupby("pid")["peak"].idxmax()].reset_index(drop=True)


def child_holds_most(trace: Any, tl: Timeline) -> list[Finding]:
    """For the traced process's explanation: a child whose RSS anon peaked above the parent's."""
    p = peaks(trace.columns)
    if not len(p):
        return []
    mine = int(tl.rss["anon_high"].max()) if len(tl.rss) else 0
    others = p[p["pid"] != tl.pid].sort_values("peak", ascending=False)
    if not len(others) or int(others["peak"].iloc[0]) <= max(mine, CHILD_MIN - 1):
        return []
    top = others.iloc[0]
    pid, peak, ts = int(top["pid"]), int(top["peak"]), int(top["ts"])
    above = int((others["peak"] > mine).sum())
    msg = (f"Process {pid}, traced as a child, held the most memory: its resident anonymous memory peaked at "
           f"{kib(peak)} at {rel_s(ts, tl.t0):.3f} s, against {kib(mine)} for the traced process {tl.pid}"
           + (f" ({above} children peaked above it)" if above > 1 else "")
           + f"; `heapline explain --pid {pid}` explains it.")
    return [Finding("CHILD_HOLDS_MOST", msg, {"pid": pid, "rss_anon_peak": peak, "at_s": rel_s(ts, tl.t0),
                                              "traced_rss_anon_peak": mine, "children_above": above}, ts)]
