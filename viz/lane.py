"""The event lane: every memory syscall, malloc_trim and mallopt of the process as a marker.

Each marker's hover text is the call as strace prints it (``tracer.decode.format_call``), when it
happened, how long it took, the bytes it moved and the break after it. Upward triangles grow the
process, downward ones give memory back, circles change neither; a failed call is a cross. Past
``MARKER_LIMIT`` calls, each kind keeps one marker per time slice (the largest), which says how
many calls it stands for: a slice that gave memory back always keeps a downward marker.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tracer.analysis.model import Timeline
from tracer.columns import Events
from tracer.decode import RELEASE_ADVICE, format_call
from tracer.events import KIND_NAMES, Kind
from tracer.units import human_bytes, human_ns
from viz.reduce import MARKER_BUCKETS, representatives
from viz.style import ALLOCATOR, ANON, HEAP, PROTECT, RELEASE, seconds

LANE_KINDS: tuple[Kind, ...] = (Kind.BRK, Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MADVISE, Kind.MPROTECT,
                                Kind.MALLOC_TRIM, Kind.MALLOPT)
MARKER_LIMIT = 2000
ERRNO_MAX = 4095
FAILED = "#8a8a8a"

#: glibc's mallopt parameters (malloc.h)
MALLOPT_PARAMS: dict[int, str] = {1: "M_MXFAST", -1: "M_TRIM_THRESHOLD", -2: "M_TOP_PAD", -3: "M_MMAP_THRESHOLD",
                                  -4: "M_MMAP_MAX", -5: "M_CHECK_ACTION", -6: "M_PERTURB", -7: "M_ARENA_TEST",
                                  -8: "M_ARENA_MAX"}


def _signed32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def call_text(ev: np.void) -> str:
    """One call as strace would print it; malloc_trim and mallopt the way ltrace shows them."""
    kind = int(ev["kind"])
    if kind == Kind.MALLOC_TRIM:
        return f"malloc_trim({int(ev['a0'])}) = {int(ev['ret'])}"
    if kind == Kind.MALLOPT:
        param = _signed32(int(ev["a0"]))
        return f"mallopt({MALLOPT_PARAMS.get(param, str(param))}, {_signed32(int(ev['a1']))}) = {int(ev['ret'])}"
    return format_call(ev)


def at(ns: int) -> str:
    """A moment since the start, precise enough to find it again (12.345 ms, 3.456789 s)."""
    if abs(ns) >= 1_000_000_000:
        return f"{ns / 1e9:.6f} s"
    if abs(ns) >= 1_000_000:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e3:.1f} µs"


def segment(events: Events, pid: int) -> Events:
    """The events of ``pid`` from its last execve on: the address space the timeline describes."""
    mine = events["pid"] == pid
    ev = events if mine.all() else events[mine]
    ex = np.flatnonzero(ev["kind"] == Kind.EXEC)
    return ev[ex[-1] :] if len(ex) else ev


def _page_up(n: np.ndarray, page: int) -> np.ndarray:
    return ((n.astype(np.int64) + page - 1) // page) * page


@dataclass
class Calls:
    """The lane's calls with what each did: signed bytes (+ grew, - gave back), effect, break after."""

    ev: Events
    moved: np.ndarray  # int64: bytes, signed
    effect: np.ndarray  # int8: 1 grow, -1 release, 0 neither
    failed: np.ndarray
    brk_after: np.ndarray  # int64, 0 when no break is known yet


def calls(seg: Events, tl: Timeline, page: int) -> Calls:
    """The lane's calls among ``seg``, the events of the address space shown (see :func:`segment`)."""
    k = seg["kind"]
    ev = seg[((k >= Kind.BRK) & (k <= Kind.MPROTECT)) | (k == Kind.MALLOC_TRIM) | (k == Kind.MALLOPT)]
    k, ret = ev["kind"], ev["ret"]
    failed = (ret < 0) & (ret >= -ERRNO_MAX) & (k < Kind.MALLOC)
    moved = np.zeros(len(ev), dtype=np.int64)
    effect = np.zeros(len(ev), dtype=np.int8)

    b = np.flatnonzero(k == Kind.BRK)
    rets = ret[b].astype(np.int64)
    first = int(tl.breaks["brk"].iloc[0]) if len(tl.breaks) else (int(rets[0]) if len(rets) else 0)
    prev = np.concatenate([[first], rets[:-1]]) if len(rets) else rets
    moved[b] = rets - prev
    m = k == Kind.MMAP
    moved[m] = _page_up(ev["a1"][m], page)
    m = k == Kind.MUNMAP
    moved[m] = -_page_up(ev["a1"][m], page)
    m = k == Kind.MREMAP
    moved[m] = _page_up(ev["a2"][m], page) - _page_up(ev["a1"][m], page)
    m = (k == Kind.MADVISE) | (k == Kind.MPROTECT)
    moved[m] = _page_up(ev["a1"][m], page)
    release_advice = (k == Kind.MADVISE) & np.isin(ev["a2"], np.array(sorted(RELEASE_ADVICE), dtype=np.uint64))
    moved[release_advice] *= -1
    trims = np.flatnonzero(k == Kind.MALLOC_TRIM)
    if len(trims) and len(tl.releases):
        rts = tl.releases["ts"].to_numpy()
        cum = np.concatenate([[0], np.cumsum(tl.releases["bytes"].to_numpy())])
        lo = np.searchsorted(rts, ev["ts"][trims].astype(np.int64), side="left")
        hi = np.searchsorted(rts, (ev["ts"][trims] + ev["dur"][trims]).astype(np.int64), side="right")
        moved[trims] = -(cum[hi] - cum[lo])
    moved[failed] = 0
    effect[(moved > 0) & ((k == Kind.BRK) | (k == Kind.MMAP) | (k == Kind.MREMAP))] = 1
    effect[(moved < 0)] = -1

    brk_after = np.zeros(len(ev), dtype=np.int64)
    if len(tl.breaks):
        bts = tl.breaks["ts"].to_numpy()
        i = np.searchsorted(bts, ev["ts"].astype(np.int64), side="right") - 1
        brk_after = np.where(i >= 0, tl.breaks["brk"].to_numpy()[np.maximum(i, 0)], 0).astype(np.int64)
    return Calls(ev, moved, effect, failed, brk_after)


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
    parts = [f"<b>{html.escape(call_text(ev))}</b>"]
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
LOOKS = ((1, "grew", "triangle-up"), (-1, "gave back", "triangle-down"), (0, "neither", "circle"),
         (2, "failed", "x"))


def _color(kind: int, look: int) -> str:
    if look == 2:
        return FAILED
    if look == -1:
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
    c = calls(seg, tl, page)
    kinds = [kk for kk in LANE_KINDS if (c.ev["kind"] == kk).any()]
    look = np.where(c.failed, 2, c.effect).astype(np.int64)
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
