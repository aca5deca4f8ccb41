"""The event lane: every memory syscall, malloc_trim and mallopt of the process as a marker
(what each did is tracer.analysis.calls's; this module draws it).

Each marker's hover text is the call as strace prints it (``tracer.decode.format_call``), when it
happened, how long it took, the bytes it moved and the break after it. Upward triangles grow the
process, downward ones give memory back, circles change neither; a failed call is a cross. Past
``MARKER_LIMIT`` calls, each kind keeps one marker per time slice (the largest), which says how
many calls it stands for: a slice that gave memory back always keeps a downward marker.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from tracer.analysis.calls import CALL_KINDS, GAVE_BACK, GREW, NEITHER, Calls, effects
from tracer.analysis.model import Timeline
from tracer.columns import Events
from tracer.decode import format_call
from tracer.events import KIND_NAMES, Kind
from tracer.units import human_bytes, human_ns
from viz.reduce import MARKER_BUCKETS, representatives
from viz.style import ALLOCATOR, ANON, HEAP, PROTECT, RELEASE, seconds

MARKER_LIMIT = 1500  # calls; past it, one marker per kind, look and slice (each hover says how many it stands for)
FAILED = "#8a8a8a"


def at(ns: int) -> str:
    """A moment since the start, precise enough to find it again (12.345 ms, 3.456789 s)."""
    if abs(ns) >= 1_000_000_000:
        return f"{ns / 1e9:.6f} s"
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e3:.1f} µs"


def _bytes_line(kind: int, moved: int, ev: np.void, failed: bool) -> str:
    if failed:
        return "failed: nothing changed"
    if kind == Kind.MALLOPT:
        return ""
    if kind == Kind.MALLOC_TRIM:
        return f"released inside: {human_bytes(-moved)}" if moved else "released nothing"
    if kind == Kind.MPROTECT or (kind == Kind.MADVISE and moved > 0):
        return f"{human_bytes(moved)} ({moved:,} bytes)"
    if moved < 0:
        return f"gave back {human_bytes(-moved)} ({-moved:,} bytes)"
    if moved > 0:
        return f"grew {human_bytes(moved)} ({moved:,} bytes)"
    return "no change"


def _hover(c: Calls, i: int, t0: int, start_brk: int, count: int, total: int, slice_ns: int) -> str:
    ev = c.ev[i]
    kind = int(ev["kind"])
    parts = [f"<b>{html.escape(format_call(ev))}</b>"]
    took = f" · took {human_ns(int(ev['dur']))}" if int(ev["dur"]) else ""
    thread = f" · thread {int(ev['tid'])}" if int(ev["tid"]) != int(ev["pid"]) else ""
    parts.append(f"at {at(int(ev['ts']) - t0)}{took}{thread}")
    line = _bytes_line(kind, int(c.moved[i]), ev, bool(c.failed[i]))
    if line:
        parts.append(line)
    brk = int(c.brk_after[i])
    if brk:
        parts.append(f"break after: {brk:#x} (heap {human_bytes(brk - start_brk)})")
    if count > 1:
        name = KIND_NAMES[kind]
        sign = "−" if total < 0 else "+"
        parts.append(f"stands for {count:,} {name} calls within {human_ns(slice_ns)}: {sign}{human_bytes(abs(total))}"
                     " in all")
    return "<br>".join(parts)


#: how a marker looks: (name, symbol) by what the call did
FAILED_LOOK = 2
LOOKS = ((GREW, "grew", "triangle-up"), (GAVE_BACK, "gave back", "triangle-down"), (NEITHER, "neither", "circle"),
         (FAILED_LOOK, "failed", "x"))


def _color(kind: int, look: int) -> str:
    if look == FAILED_LOOK:
        return FAILED
    if look == GAVE_BACK:
        return RELEASE
    if kind == Kind.BRK:
        return HEAP
    if kind == Kind.MPROTECT:
        return PROTECT
    if kind in (Kind.MALLOC_TRIM, Kind.MALLOPT):
        return ALLOCATOR
    return ANON


def lane_traces(seg: Events, tl: Timeline, page: int, t0: int, span: int,
                axes: tuple[str, str] = ("x2", "y2")) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Plotly traces of the lane (one per kind and look: plain styles draw fastest), its row names
    (bottom to top) and what was drawn."""
    c = effects(seg, tl, page)
    kinds = [kk for kk in CALL_KINDS if (c.ev["kind"] == kk).any()]
    look = np.where(c.failed, FAILED_LOOK, c.effect).astype(np.int64)
    group = c.ev["kind"].astype(np.int64) * 4 + look + 1
    kept = representatives(c.ev["ts"].astype(np.int64), c.moved, group, t0, span, MARKER_LIMIT)
    slice_ns = max(span // MARKER_BUCKETS, 1)
    kept_kind, kept_look = c.ev["kind"][kept.rows], look[kept.rows]
    traces = []
    for row, kk in enumerate(kinds):
        for value, how, symbol in LOOKS:
            sel = np.flatnonzero((kept_kind == kk) & (kept_look == value))
            if not len(sel):
                continue
            rows = kept.rows[sel]
            text = [_hover(c, int(i), t0, tl.start_brk, int(kept.count[j]), int(kept.total[j]), slice_ns)
                    for i, j in zip(rows.tolist(), sel.tolist(), strict=True)]
            name = KIND_NAMES[int(kk)]
            traces.append({
                "type": "scatter", "mode": "markers", "name": f"{name} ({how})", "xaxis": axes[0],
                "yaxis": axes[1], "x": seconds(c.ev["ts"][rows], t0), "y": np.full(len(rows), float(row)),
                "marker": {"color": _color(int(kk), value), "symbol": symbol, "size": 9, "line": {"width": 0}},
                "hovertext": text, "hovertemplate": "%{hovertext}<extra></extra>", "showlegend": False,
                "meta": {"panel": "lane", "kind": name, "look": how},
            })
    info = {"calls": len(c.ev), "markers": int(len(kept.rows)), "reduced": kept.reduced,
            "kinds": [KIND_NAMES[int(kk)] for kk in kinds]}
    return traces, [KIND_NAMES[int(kk)] for kk in kinds], info


def released_by_call(releases: pd.DataFrame) -> dict[str, int]:
    """Bytes given back per call (brk, munmap, mremap, madvise)."""
    if not len(releases):
        return {}
    return {str(k): int(v) for k, v in releases.groupby("call", sort=False)["bytes"].sum().items()}
