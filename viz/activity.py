"""The allocator activity lane: blocks allocated (up) and freed (down) per second in each time slice,
and each malloc_trim as a bar as long as it took (what is counted is tracer.analysis.activity's).

A quiet phase of a few large frees and a churn of millions of calls are both visible: every slice
with a call has a bar, and its hover gives the calls and bytes of that slice (the page writes it
from the slices' figures, sent once for both series).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracer.analysis.activity import Activity
from tracer.units import human_ns
from viz.lane import at
from viz.style import ALLOCATOR, LIVE, RELEASE, seconds


def activity_traces(a: Activity, t0: int, axes: tuple[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plotly traces of the lane and what was drawn: allocations as bars up, frees as bars down, in
    blocks per second; malloc_trim calls as horizontal bars at the top."""
    width_ns = np.maximum(np.diff(a.edges), 1)
    # what the page's hover says of a slice (it writes the text: a million calls need no million strings)
    slices = {"edges": seconds(a.edges, t0), "allocated": a.allocated.astype(np.float64),
              "freed": a.freed.astype(np.float64), "allocated_bytes": a.allocated_bytes.astype(np.float64),
              "freed_bytes": a.freed_bytes.astype(np.float64)}
    traces: list[dict[str, Any]] = []
    top = 1.0
    for name, counts, sign, color in (("allocated", a.allocated, 1, LIVE), ("freed", a.freed, -1, RELEASE)):
        busy = np.flatnonzero(counts > 0)
        rate = counts[busy] * 1e9 / width_ns[busy]
        if len(rate):
            top = max(top, float(rate.max()))
        traces.append({
            "type": "bar", "name": f"blocks {name} per second", "xaxis": axes[0], "yaxis": axes[1],
            "x": seconds(a.edges[busy], t0) + width_ns[busy] / 2e9, "y": sign * rate.astype(np.float64),
            "width": width_ns[busy] / 1e9, "marker": {"color": color, "line": {"width": 0}},
            "hovertemplate": "%{hovertext}<extra></extra>", "showlegend": False,
            "meta": {"panel": "activity", "series": name, "hover": "slices", "slices": slices,
                     "rows": busy.astype(np.float64)},
        })
    if len(a.trims):
        xs: list[float | None] = []
        hover: list[str] = []
        for start, dur, pad, ret in a.trims.tolist():
            s = float(seconds(start, t0))
            line = (f"<b>malloc_trim({pad:,})</b> at {at(start - t0)} · took {human_ns(dur)} · "
                    f"returned {ret} ({'gave memory back' if ret else 'gave nothing back'})")
            xs += [s, s + dur / 1e9, None]
            hover += [line, line, ""]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": "malloc_trim", "xaxis": axes[0], "yaxis": axes[1],
            "x": xs, "y": [top * 0.85 if x is not None else None for x in xs],
            "line": {"width": 7, "color": ALLOCATOR}, "marker": {"size": 7, "color": ALLOCATOR, "symbol": "line-ns"},
            "hovertext": hover, "hovertemplate": "%{hovertext}<extra></extra>", "showlegend": False,
            "meta": {"panel": "activity", "series": "malloc_trim"},
        })
    busy = int(((a.allocated > 0) | (a.freed > 0)).sum())
    info = {"slices": int(len(a.allocated)), "busy_slices": busy, "calls": a.total, "trims": int(len(a.trims)),
            "peak_rate": top if busy else 0.0}
    return traces, info
