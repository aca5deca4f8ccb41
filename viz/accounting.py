"""The accounting panel: resident memory by cause as a stacked area (tracer.analysis.overtime's
layers: their sum is RSS anon), the address space (heap + anonymous mappings) as a line apart, and
the phases that kept memory shaded behind it with their finding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracer.analysis.overtime import LAYERS, OverTime
from viz.style import ANON, ARENA, FOOTPRINT, HEAP, LIVE, OWN, RELEASE, RSS, STACK, rgba, seconds

#: layer -> colour (the memory panel's where the meaning is the same)
COLORS = {
    "live": LIVE, "allocator overhead": "#a0cbe8", "cached": "#ffbe7d", "free below the highest live chunk": RELEASE,
    "top": HEAP, "free in thread arenas": ARENA, "held beyond live": RSS, "mmapped chunks": ANON,
    "the program's own mappings": OWN, "stacks": STACK,
}


def accounting_traces(o: OverTime, t0: int, axes: tuple[str, str],
                      legend: str = "legend3") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plotly traces of the panel and what was drawn."""
    x = seconds(o.ts, t0)  # the last moment is the process's last (its exit, or the end of the recording)

    def ext(v: np.ndarray) -> np.ndarray:
        return v.astype(np.float64)

    traces: list[dict[str, Any]] = []
    for name, values in o.layers.items():
        traces.append({
            "type": "scatter", "mode": "lines", "name": name, "xaxis": axes[0], "yaxis": axes[1], "x": x,
            "y": ext(values), "stackgroup": "resident", "line": {"shape": "hv", "width": 0.5, "color": COLORS[name]},
            "fillcolor": rgba(COLORS[name], 0.75), "hovertemplate": "%{text}<extra></extra>", "legend": legend,
            "meta": {"panel": "accounting", "series": name, "hover": "bytes", "note": LAYERS[name]},
        })
    traces.append({
        "type": "scatter", "mode": "lines", "name": "address space (heap + anonymous mappings)", "xaxis": axes[0],
        "yaxis": axes[1], "x": x, "y": ext(o.footprint), "legend": legend,
        "line": {"shape": "hv", "width": 1.6, "color": FOOTPRINT, "dash": "dash"},
        "hovertemplate": "%{text}<extra></extra>",
        "meta": {"panel": "accounting", "series": "address space", "hover": "bytes",
                 "note": "mapped, resident or not; not part of the stack"},
    })
    stack_top = float(sum(o.layers.values()).max()) if o.layers else 0.0
    if o.footprint.max() > 4 * max(stack_top, 1.0):  # it would flatten the stack: one click shows it
        traces[-1]["visible"] = "legendonly"
    info = {"moments": int(len(o.ts)), "layers": list(o.layers), "sampled": o.sampled, "top": stack_top}
    return traces, info
