"""The address-space map: time across, address up.

Mappings are bars over their lifetime (``model.mappings``; PROT_NONE reservations hatched), the
heap a band from start_brk to the break, and every release (brk shrink, munmap, mremap shrink,
madvise) a mark at its time over the range it gave back.

A process's address space is mostly empty: the heap sits near the program, the mappings
terabytes higher. The axis keeps each group of nearby mappings (a cluster: no hole over
``GAP`` inside) to scale, and draws the holes between clusters as thin breaks; ticks give the
real addresses, and no bar is drawn thinner than ``MIN_HEIGHT`` of the axis.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tracer.analysis.model import Timeline
from tracer.units import human_bytes
from viz.lane import at
from viz.reduce import MARKER_BUCKETS, representatives, step_rows
from viz.style import ARENA, FILE, FREE_RUN, HEAP, MMAPPED, OWN, PIN, RELEASE, STACK, rgba, seconds

GAP = 16 << 20
USER_TOP = 1 << 47
MAX_CLUSTERS = 12
BREAK_SHARE = 0.04  # of the axis, between two clusters
MIN_SHARE = 0.1
MIN_HEIGHT = 0.008
SEGMENT_MIN = 0.02  # of the axis: a release range drawn as a line past its marker
TICK_NEAR = 0.03  # of the axis: a named address replaces a tick this close
BAR_LIMIT = 2000
RELEASE_LIMIT = 2000

WHAT = {  # mapping kind -> colour, legend name
    "anon": (OWN, "anonymous mappings (not malloc's)"),
    "malloc-mmap": (MMAPPED, "mapped by malloc (one block each)"),
    "heap-arena": (ARENA, "thread-arena heaps"),
    "stack": (STACK, "thread stacks"),
    "file": (FILE, "file mappings"),
}
#: what the NORESERVE reservations are, by allocator family (glibc's are its thread-arena heaps)
REGIONS = {"jemalloc": "jemalloc's regions", "tcmalloc": "tcmalloc's regions", "mimalloc": "mimalloc's regions"}
RELEASE_SYMBOL = {"brk": "triangle-down", "munmap": "x", "mremap": "triangle-left", "madvise": "diamond"}


@dataclass
class MapFacts:
    """What the analysis knows of the mappings beyond their calls: the allocator family, the blocks
    malloc mapped one by one (chunk start -> [(allocated at ns, bytes requested)], oldest first: an
    address can be mapped again for a later block), and the live block that pins the break (the
    BRK_PINNED_BY_LIVE_CHUNK finding's evidence), if any; the free chunks in the main heap's bins
    at the process's last moment."""

    family: str | None = None
    mmapped: dict[int, list[tuple[int, int]]] | None = None
    pin: dict[str, Any] | None = None
    free_runs: np.ndarray | None = None  # (start, end) rows: the free chunks under the break at ``free_at``
    free_at: int = 0

    def block_of(self, start: int, born: int) -> tuple[int, int] | None:
        """The block (allocated at, bytes) whose malloc made the mapping at ``start`` born at ``born``:
        the latest one at that address allocated by then."""
        made = [m for m in (self.mmapped or {}).get(start, []) if m[0] <= born]
        return made[-1] if made else None


@dataclass
class AddressAxis:
    """Piecewise-linear map from address to the axis (0..1): each cluster to scale, holes collapsed."""

    lo: np.ndarray
    hi: np.ndarray
    y0: np.ndarray
    y1: np.ndarray

    def y(self, addr: np.ndarray | int) -> np.ndarray:
        a = np.asarray(addr, dtype=np.float64)
        if not len(self.lo):
            return np.zeros_like(a)
        i = np.clip(np.searchsorted(self.lo, a, side="right") - 1, 0, len(self.lo) - 1)
        frac = np.clip((a - self.lo[i]) / np.maximum(self.hi[i] - self.lo[i], 1.0), 0.0, 1.0)
        return self.y0[i] + frac * (self.y1[i] - self.y0[i])

    def ticks(self, named: dict[int, str]) -> tuple[list[float], list[str]]:
        """Each cluster's base address once, then offsets from it (``+1.0 MiB``); ``named``
        addresses (start_brk: its address is in the heap band's hover) replace the ticks they would sit on."""
        vals: list[float] = []
        text: list[str] = []
        for lo, hi, y0, y1 in zip(self.lo.tolist(), self.hi.tolist(), self.y0.tolist(), self.y1.tolist(), strict=True):
            steps = 4 if y1 - y0 > 0.3 else (2 if y1 - y0 > 0.12 else 1)
            base = int(lo) & ~0xFFF
            for j in range(steps + 1):
                addr = int(lo + (hi - lo) * j / steps) & ~0xFFF
                vals.append(float(self.y(addr)))
                text.append(f"{addr:#x}" if j == 0 else f"+{human_bytes(addr - base)}")
        for addr, name in named.items():
            y = float(self.y(addr))
            near = [i for i, v in enumerate(vals) if abs(v - y) < TICK_NEAR]
            for i in reversed(near):
                del vals[i], text[i]
            vals.append(y)
            text.append(name)
        return vals, text


def address_axis(starts: np.ndarray, ends: np.ndarray) -> AddressAxis:
    """Clusters of the ranges given (no hole over GAP inside, at most MAX_CLUSTERS), laid out bottom up."""
    if not len(starts):
        z = np.empty(0)
        return AddressAxis(z, z, z, z)
    order = np.argsort(starts, kind="stable")
    s = starts[order].astype(np.float64)
    e = np.maximum.accumulate(ends[order].astype(np.float64))
    gaps = s[1:] - e[:-1]
    cut = np.flatnonzero(gaps > GAP)
    if len(cut) > MAX_CLUSTERS - 1:
        cut = np.sort(cut[np.argsort(gaps[cut])[::-1][: MAX_CLUSTERS - 1]])
    first = np.concatenate([[0], cut + 1])
    last = np.concatenate([cut, [len(s) - 1]])
    lo, hi = s[first], e[last]
    weight = np.log2((hi - lo) / 4096 + 2)
    share = np.maximum(weight / weight.sum(), MIN_SHARE)
    usable = 1.0 - BREAK_SHARE * (len(lo) - 1)
    share = share / share.sum() * usable
    y0 = np.concatenate([[0.0], np.cumsum(share[:-1] + BREAK_SHARE)])
    return AddressAxis(lo, hi, y0, y0 + share)


def _perms(prot: int) -> str:
    return ("r" if prot & 1 else "-") + ("w" if prot & 2 else "-") + ("x" if prot & 4 else "-")


def merge_slices(mp: pd.DataFrame, span: int) -> pd.DataFrame:
    """Thread-arena heaps are reserved PROT_NONE and opened by mprotect a few pages at a time, each
    step cutting a slice of its own (an opened one, and the reserved one it was). Slices of a heap
    next to each other, alike (protection, how they ended), whose births and ends each lie within
    one pixel (``span / MARKER_BUCKETS``) of the first's, become one bar: what is merged differs by
    less than the drawing shows. ``slices`` counts them; ``born_last`` and ``died_first`` bound the
    births and ends merged."""
    mp = mp.assign(slices=1, born_last=mp["born"], died_first=mp["died"])
    arena = mp[mp["what"] == "heap-arena"]
    if len(arena) < 2:
        return mp
    tol = span / MARKER_BUCKETS
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for r in arena.sort_values(["prot", "ended_by", "start"], kind="stable").to_dict("records"):
        last = rows[-1] if rows else None
        if (last is not None and last["end"] == r["start"] and last["prot"] == r["prot"]
                and last["ended_by"] == r["ended_by"] and abs(r["born"] - first["born"]) <= tol
                and abs(r["died"] - first["died"]) <= tol):
            last["end"], last["size"] = r["end"], last["size"] + r["size"]
            last["slices"] += 1
            last["born"], last["born_last"] = min(last["born"], r["born"]), max(last["born_last"], r["born"])
            last["died"], last["died_first"] = max(last["died"], r["died"]), min(last["died_first"], r["died"])
        else:
            rows.append(dict(r))
            first = r
    merged = pd.DataFrame(rows, columns=mp.columns).astype(mp.dtypes.to_dict())
    return pd.concat([mp[mp["what"] != "heap-arena"], merged], ignore_index=True)


def _pick_bars(mp: pd.DataFrame, span: int) -> pd.DataFrame:
    """At most BAR_LIMIT mappings: the biggest in bytes x time (what is dropped lived under a pixel or two)."""
    if len(mp) <= BAR_LIMIT:
        return mp
    life = np.maximum((mp["died"] - mp["born"]).to_numpy(np.float64), span / MARKER_BUCKETS)
    score = mp["size"].to_numpy(np.float64) * life
    keep = np.sort(np.argsort(score)[::-1][:BAR_LIMIT])
    return mp.iloc[keep]


def _kinds(g: pd.DataFrame, facts: MapFacts) -> np.ndarray:
    what = g["what"].to_numpy(object).copy()
    if facts.mmapped:
        for i in np.flatnonzero(what == "anon").tolist():
            if facts.block_of(int(g["start"].iat[i]), int(g["born"].iat[i])) is not None:
                what[i] = "malloc-mmap"
    return what


def _label(what: str, facts: MapFacts) -> str:
    if what == "heap-arena" and facts.family not in (None, "glibc"):
        return REGIONS.get(str(facts.family), f"{facts.family}'s regions")
    return WHAT[what][1]


def mapping_traces(mp: pd.DataFrame, ax: AddressAxis, t0: int, span: int, axes: tuple[str, str],
                   facts: MapFacts | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """One horizontal bar trace per kind of mapping; returns them, how many bars were left out and
    how many slices were merged into others (:func:`merge_slices`)."""
    facts = facts or MapFacts()
    merged = merge_slices(mp, span)
    drawn = _pick_bars(merged, span)
    kinds = _kinds(drawn, facts) if len(drawn) else np.empty(0, dtype=object)
    traces = []
    for what, (color, _) in WHAT.items():
        label = _label(what, facts)
        for reserved in (False, True):
            g = drawn[(kinds == what) & ((drawn["prot"] == 0) == reserved).to_numpy()]
            if not len(g):
                continue
            start, end = g["start"].to_numpy(np.float64), g["end"].to_numpy(np.float64)
            lo, hi = ax.y(start), ax.y(end)
            born, died = g["born"].to_numpy(np.int64), g["died"].to_numpy(np.int64)
            text = []
            for a, b, p, t1, t2, why, n, t3, t4 in zip(g["start"], g["end"], g["prot"], born, died, g["ended_by"],
                                                      g["slices"], g["born_last"], g["died_first"], strict=True):
                line = (f"<b>{html.escape(label)} {_perms(int(p))}</b> {int(a):#x}–{int(b):#x} "
                        f"({human_bytes(int(b) - int(a))})<br>from {at(int(t1) - t0)} until {at(int(t2) - t0)} "
                        f"({html.escape(str(why))})")
                if n > 1:
                    line += (f"<br>{int(n):,} slices, made from {at(int(t1) - t0)} to {at(int(t3) - t0)}, ended "
                             f"from {at(int(t4) - t0)} to {at(int(t2) - t0)}")
                blk = facts.block_of(int(a), int(t1)) if what == "malloc-mmap" else None
                if blk is not None:
                    line += f"<br>malloc's chunk of one block: {blk[1]:,} B requested at {at(blk[0] - t0)}"
                if reserved:
                    line += "<br>PROT_NONE: reserved, not counted until mprotect opens it"
                text.append(line)
            marker: dict[str, Any] = {"color": color, "opacity": 0.35 if what == "file" else 0.75, "line": {"width": 0}}
            if reserved:
                marker["pattern"] = {"shape": "/", "solidity": 0.3}
            traces.append({
                "type": "bar", "orientation": "h", "name": label,
                "xaxis": axes[0], "yaxis": axes[1], "base": seconds(born, t0),
                "x": (died - born).astype(np.float64) / 1e9, "y": (lo + hi) / 2,
                "width": np.maximum(hi - lo, MIN_HEIGHT), "marker": marker, "hovertext": text,
                "hovertemplate": "%{hovertext}<extra></extra>", "legend": "legend2", "legendgroup": what,
                "showlegend": not reserved, "meta": {"panel": "map", "what": what, "reserved": reserved},
            })
    return traces, len(merged) - len(drawn), len(mp) - len(merged)


def pin_traces(pin: dict[str, Any], ax: AddressAxis, t0: int, end: int, axes: tuple[str, str]) -> list[dict[str, Any]]:
    """The live block that pins the break: a line at its address from its malloc to the end."""
    block = pin["block"]
    addr, made = int(block["address"], 16), int(block["allocated_at_ns"])
    y = float(ax.y(addr))
    text = (f"<b>the live block that pins the break</b><br>{block['size']:,} B at {addr:#x}, allocated at "
            f"{at(made - t0)}<br>freeing it would let glibc lower the break by "
            f"{human_bytes(int(pin.get('release_if_freed') or 0))}")
    return [{"type": "scatter", "mode": "lines+markers", "name": "block pinning the break", "xaxis": axes[0],
             "yaxis": axes[1], "x": seconds(np.array([made, end]), t0), "y": [y, y],
             "line": {"color": PIN, "width": 2, "dash": "dot"},
             "marker": {"symbol": ["star", "line-ns"], "size": [12, 1], "color": PIN},
             "hovertext": [text, text], "hovertemplate": "%{hovertext}<extra></extra>", "legend": "legend2",
             "meta": {"panel": "map", "what": "pin"}}]


def heap_traces(tl: Timeline, ax: AddressAxis, t0: int, end: int, axes: tuple[str, str]) -> list[dict[str, Any]]:
    """The heap: a band from start_brk up to the break, stepping with every brk call."""
    b = tl.breaks
    if not len(b) or not tl.start_brk:
        return []
    ts, brk = b["ts"].to_numpy(np.int64), b["brk"].to_numpy(np.int64)
    rows, _ = step_rows(ts, [brk], t0, end - t0)
    ts, brk = np.append(ts[rows], max(end, int(ts[-1]))), np.append(brk[rows], brk[rows][-1])
    x = seconds(ts, t0)
    base = {"type": "scatter", "mode": "lines", "xaxis": axes[0], "yaxis": axes[1], "x": x[[0, -1]],
            "y": np.repeat(ax.y(tl.start_brk), 2), "line": {"width": 0, "color": HEAP}, "hoverinfo": "skip",
            "showlegend": False, "legendgroup": "heap", "legend": "legend2", "meta": {"panel": "map", "what": "base"}}
    text = [f"break {int(v):#x}<br>heap {human_bytes(int(v) - tl.start_brk)} at {at(int(t) - t0)}"
            for v, t in zip(brk, ts, strict=True)]
    band = {"type": "scatter", "mode": "lines", "name": "heap (start_brk to break)", "xaxis": axes[0],
            "yaxis": axes[1], "x": x, "y": ax.y(brk), "line": {"shape": "hv", "width": 1.5, "color": HEAP},
            "fill": "tonexty", "fillcolor": rgba(HEAP, 0.3), "hoveron": "points", "hovertext": text,
            "hovertemplate": "%{hovertext}<extra></extra>", "legendgroup": "heap", "legend": "legend2",
            "meta": {"panel": "map", "what": "heap"}}
    return [base, band]


def release_traces(rel: pd.DataFrame, ax: AddressAxis, t0: int, span: int,
                   axes: tuple[str, str]) -> tuple[list[dict[str, Any]], bool]:
    """Every release as a mark over the range it gave back (one per call and time slice past RELEASE_LIMIT)."""
    if not len(rel):
        return [], False
    calls = rel["call"].to_numpy(object)
    codes = {c: i for i, c in enumerate(RELEASE_SYMBOL)}
    kept = representatives(rel["ts"].to_numpy(np.int64), rel["bytes"].to_numpy(np.int64),
                           np.array([codes.get(c, 9) for c in calls]), t0, span, RELEASE_LIMIT)
    traces = []
    for call, symbol in RELEASE_SYMBOL.items():
        sel = np.flatnonzero(calls[kept.rows] == call)
        if not len(sel):
            continue
        g = rel.iloc[kept.rows[sel]]
        lo, hi = ax.y(g["start"].to_numpy(np.float64)), ax.y(g["end"].to_numpy(np.float64))
        x = seconds(g["ts"].to_numpy(np.int64), t0)
        tall = np.flatnonzero(hi - lo > SEGMENT_MIN)  # a smaller range hides under its marker anyway
        if len(tall):
            nan = np.full(len(tall), np.nan)
            traces.append({"type": "scatter", "mode": "lines", "xaxis": axes[0], "yaxis": axes[1],
                           "x": np.column_stack([x[tall], x[tall], nan]).ravel(),
                           "y": np.column_stack([lo[tall], hi[tall], nan]).ravel(),
                           "line": {"color": rgba(RELEASE, 0.8), "width": 3}, "hoverinfo": "skip",
                           "showlegend": False, "legendgroup": f"release-{call}", "legend": "legend2",
                           "connectgaps": False, "meta": {"panel": "map", "what": "release-range"}})
        text = []
        rows = zip(g["ts"].tolist(), g["start"].tolist(), g["end"].tolist(), g["bytes"].tolist(), g["advice"].tolist(),
                   g["inside"].tolist(), kept.count[sel].tolist(), kept.total[sel].tolist(), strict=True)
        for ts, start, end, nbytes, advice, inside, n, tot in rows:
            how = f"{call}({advice})" if isinstance(advice, str) else call
            line = (f"<b>released by {html.escape(how)}</b><br>{int(start):#x}–{int(end):#x} "
                    f"({human_bytes(int(nbytes))}) at {at(int(ts) - t0)}")
            if isinstance(inside, str):
                line += f"<br>inside {html.escape(inside)}()"
            if n > 1:
                line += f"<br>stands for {n:,} {call} releases in this slice: {human_bytes(tot)} in all"
            text.append(line)
        traces.append({"type": "scatter", "mode": "markers", "name": f"released: {call}", "xaxis": axes[0],
                       "yaxis": axes[1], "x": x, "y": (lo + hi) / 2,
                       "marker": {"symbol": symbol, "size": 9, "color": RELEASE, "line": {"width": 0}},
                       "hovertext": text, "hovertemplate": "%{hovertext}<extra></extra>",
                       "legendgroup": f"release-{call}",
                       "legend": "legend2", "meta": {"panel": "map", "what": f"release-{call}"}})
    return traces, kept.reduced


#: free chunks drawn, the largest
RUN_LIMIT = 500


def free_run_traces(runs: np.ndarray, at_ns: int, ax: AddressAxis, t0: int,
                    axes: tuple[str, str]) -> list[dict[str, Any]]:
    """The free chunks under the break at the end: each a segment over its addresses at that
    moment (the RUN_LIMIT largest), its hover its range and bytes."""
    size = runs[:, 1] - runs[:, 0]
    keep = np.sort(np.argsort(-size, kind="stable")[:RUN_LIMIT])
    r, size = runs[keep], size[keep]
    lo, hi = ax.y(r[:, 0].astype(np.float64)), ax.y(r[:, 1].astype(np.float64))
    x = float(seconds(at_ns, t0))
    rest = len(runs) - len(r)
    total = int((runs[:, 1] - runs[:, 0]).sum())
    text = [f"<b>free chunk under the break</b> {int(a):#x}–{int(b):#x} ({human_bytes(int(n))})<br>in glibc's bins "
            f"at {at(at_ns - t0)}: reusable by malloc, not given back (only the top is)<br>{len(runs):,} free chunks, "
            f"{human_bytes(total)} in all" + (f" ({rest:,} smaller ones not drawn)" if rest else "")
            for a, b, n in zip(r[:, 0].tolist(), r[:, 1].tolist(), size.tolist(), strict=True)]
    nan = np.full(len(r), np.nan)
    return [
        {"type": "scatter", "mode": "lines", "xaxis": axes[0], "yaxis": axes[1],
         "x": np.column_stack([np.full(len(r), x), np.full(len(r), x), nan]).ravel(),
         "y": np.column_stack([lo, hi, nan]).ravel(), "line": {"color": FREE_RUN, "width": 6},
         "hoverinfo": "skip", "showlegend": False, "legendgroup": "free-runs", "legend": "legend2",
         "connectgaps": False, "meta": {"panel": "map", "what": "free-run-range"}},
        {"type": "scatter", "mode": "markers", "name": "free chunks under the break (at the end)",
         "xaxis": axes[0], "yaxis": axes[1], "x": np.full(len(r), x), "y": (lo + hi) / 2,
         "marker": {"symbol": "line-ew", "size": 10, "color": FREE_RUN, "line": {"width": 2, "color": FREE_RUN}},
         "hovertext": text, "hovertemplate": "%{hovertext}<extra></extra>", "legendgroup": "free-runs",
         "legend": "legend2", "meta": {"panel": "map", "what": "free-runs", "count": len(runs), "bytes": total}},
    ]


def address_map(tl: Timeline, t0: int, end: int, axes: tuple[str, str] = ("x3", "y3"),
                facts: MapFacts | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """The map's traces, its y axis settings and what was drawn."""
    facts = facts or MapFacts()
    mp, rel = tl.mappings, tl.releases
    if len(mp):
        mp = mp[mp["start"] < USER_TOP]  # not [vsyscall]: a kernel page every process sees
    starts = [mp["start"].to_numpy(np.float64) if len(mp) else np.empty(0),
              rel["start"].to_numpy(np.float64) if len(rel) else np.empty(0)]
    ends = [mp["end"].to_numpy(np.float64) if len(mp) else np.empty(0),
            rel["end"].to_numpy(np.float64) if len(rel) else np.empty(0)]
    if len(tl.breaks) and tl.start_brk:
        starts.append(np.array([float(tl.start_brk)]))
        ends.append(np.array([float(max(tl.breaks["brk"].max(), tl.start_brk + 4096))]))
    ax = address_axis(np.concatenate(starts), np.concatenate(ends))
    span = end - t0
    traces = heap_traces(tl, ax, t0, end, axes)
    bars, dropped, merged = mapping_traces(mp, ax, t0, span, axes, facts) if len(mp) else ([], 0, 0)
    marks, rel_reduced = release_traces(rel, ax, t0, span, axes)
    traces += bars + marks + (pin_traces(facts.pin, ax, t0, end, axes) if facts.pin else [])
    if facts.free_runs is not None and len(facts.free_runs):
        traces += free_run_traces(facts.free_runs, facts.free_at, ax, t0, axes)
    vals, text = ax.ticks({tl.start_brk: "start_brk"} if tl.start_brk else {})
    yaxis = {"tickvals": vals, "ticktext": text, "range": [-0.02, 1.02], "showgrid": False,
             "tickfont": {"family": "ui-monospace, SFMono-Regular, Menlo, monospace", "size": 10}}
    info = {"breaks": [float((a + b) / 2) for a, b in zip(ax.y1[:-1], ax.y0[1:], strict=True)],
            "mappings": len(mp), "bars_dropped": dropped, "slices_merged": merged, "releases": len(rel),
            "releases_reduced": rel_reduced,
            "clusters": [[int(a), int(b)] for a, b in zip(ax.lo, ax.hi, strict=True)]}
    return traces, yaxis, info
