"""The report's figure: memory over time, resident memory by cause, the allocator's activity, the
memory calls and the address-space map, on one time axis.

Figures are plain plotly.js specs (dicts; numeric arrays stay numpy until the page packs them),
built from ``tracer.analysis.model.Timeline``. Times are drawn as seconds since the start of the recording
and bytes as bytes; the page labels axes and hovers in KiB/MiB/GiB and µs/ms/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tracer.analysis.activity import activity
from tracer.analysis.calls import segment
from tracer.analysis.model import Timeline
from tracer.analysis.overtime import over_time
from tracer.columns import Events
from tracer.tracefile import Trace
from viz.accounting import accounting_traces
from viz.activity import activity_traces
from viz.addrmap import MapFacts, address_map
from viz.lane import lane_traces
from viz.reduce import BUCKETS, step_rows
from viz.style import ANON, FINDING, FOOTPRINT, HEAP, LIVE, RSS, axis, rgba, seconds

#: memory series: column of Timeline.memory -> legend name, colour
SERIES: dict[str, tuple[str, str]] = {
    "heap": ("heap", HEAP),
    "anon_mapped": ("anon mappings", ANON),
    "rss_anon": ("RSS anon", RSS),
    "live_bytes": ("live", LIVE),
    "footprint": ("footprint = heap + anon mappings", FOOTPRINT),
}
HEIGHT = 1560
#: panel -> its vertical extent (fraction of the plot area), top to bottom
DOMAINS = {"memory": (0.755, 1.0), "accounting": (0.51, 0.705), "activity": (0.385, 0.465),
           "lane": (0.265, 0.34), "map": (0.0, 0.225)}


def placeholder(panel: str, axes: tuple[str, str]) -> dict[str, Any]:
    """An invisible point that keeps a panel with nothing to draw laid out (plotly draws the axes of a
    subplot without data at NaN)."""
    return {"type": "scatter", "mode": "markers", "x": [0.0], "y": [0.0], "xaxis": axes[0], "yaxis": axes[1],
            "marker": {"opacity": 0}, "showlegend": False, "hoverinfo": "skip",
            "meta": {"panel": panel, "series": "none"}}


@dataclass
class Span:
    """A phase that kept memory, shaded behind the accounting."""

    start: int  # trace clock ns
    end: int
    label: str
    major: bool


@dataclass
class Moment:
    """A finding's place on the time axis (for the lines drawn across the panels)."""

    number: int
    ts: int  # trace clock, ns
    code: str


def span_of(trace: Trace, tl: Timeline) -> tuple[int, int]:
    """Start and end of the recording (trace clock ns)."""
    meta = trace.meta
    ts = trace.columns["ts"]
    end = meta.get("end_ns") or (int(ts[-1]) if len(ts) else tl.t0)
    end = max(int(end), int(ts[-1]) if len(ts) else 0, tl.t0 + 1)
    return tl.t0, end


def active_window(seg: Events, t0: int, end: int) -> list[float]:
    """The initial view: from the first to the last event of the address space shown (seconds, padded)."""
    if len(seg) < 2:
        return [0.0, (end - t0) / 1e9]
    a, b = int(seg["ts"][0]), int(seg["ts"][-1])
    pad = max((b - a) // 30, 1000)
    return [max(a - pad - t0, 0) / 1e9, min(b + pad - t0, end - t0) / 1e9]


def memory_traces(tl: Timeline, t0: int, end: int, live: bool, rss: bool, axes: tuple[str, str] = ("x", "y"),
                  legend: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step lines of the memory series, the retained gap shaded between footprint and live.

    Each series keeps each of its changes; one with more than the drawing budget keeps the first,
    last, lowest and highest value of each of BUCKETS slices of the run (every peak stays)."""
    m = tl.memory
    cols = [c for c in SERIES if (c != "live_bytes" or live) and (c != "rss_anon" or rss)]
    ts = m["ts"].to_numpy(np.int64)
    if not len(ts):
        return [], {"points": 0, "rows": 0, "reduced": False, "series": cols}
    values = {c: m[c].to_numpy(np.int64) for c in cols}

    def xy(*columns: str) -> tuple[np.ndarray, np.ndarray, bool]:
        rows, cut = step_rows(ts, [values[c] for c in columns], t0, end - t0)
        if end > ts[rows[-1]]:  # carry the last value to the end of the recording
            rows = np.append(rows, rows[-1])
            return np.append(seconds(ts[rows[:-1]], t0), seconds(end, t0)), rows, cut
        return seconds(ts[rows], t0), rows, cut

    traces: list[dict[str, Any]] = []
    reduced, points = False, 0
    for c in cols:
        name, color = SERIES[c]
        x, rows, cut = xy(c)
        reduced, points = reduced or cut, points + len(rows)
        if c == "footprint" and live:
            bx, brows, _ = xy("footprint", "live_bytes")
            traces.append({"type": "scatter", "mode": "lines", "name": "retained = footprint − live",
                           "xaxis": axes[0], "yaxis": axes[1], "x": bx, "y": values[c][brows].astype(np.float64),
                           "line": {"shape": "hv", "width": 0, "color": color}, "fill": "tonexty",
                           "fillcolor": rgba(color, 0.18), "hoverinfo": "skip", "showlegend": legend,
                           "legendgroup": "retained", "meta": {"panel": "memory", "series": "retained"}})
        tr = {"type": "scatter", "mode": "lines", "name": name, "xaxis": axes[0], "yaxis": axes[1], "x": x,
              "y": values[c][rows].astype(np.float64),
              "line": {"shape": "hv", "width": 2.5 if c == "footprint" else 1.6, "color": color},
              "hovertemplate": "%{text}<extra></extra>", "showlegend": legend, "legendgroup": c,
              "meta": {"panel": "memory", "series": c, "hover": "bytes"}}
        if c == "footprint" and live:
            live_at = next(i for i, t in enumerate(traces) if t["meta"].get("series") == "live_bytes")
            tr["meta"] = {**tr["meta"], "hover": "footprint", "live": live_at}
        if c == "rss_anon":
            tr["line"]["dash"] = "dot"
        traces.append(tr)
    info = {"rows": int(len(m)), "points": points, "reduced": reduced, "series": cols}
    return traces, info


def _panel_title(text: str, top: float) -> dict[str, Any]:
    return {"text": f"<b>{text}</b>", "xref": "paper", "yref": "paper", "x": 0, "y": top, "xanchor": "left",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 13}}


def _spans(spans: list[Span], t0: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The phases as shaded rectangles behind the accounting, each major one labelled."""
    shapes, notes = [], []
    for sp in spans:
        a, b = (sp.start - t0) / 1e9, (sp.end - t0) / 1e9
        shapes.append({"type": "rect", "xref": "x4", "yref": "y4 domain", "x0": a, "x1": b, "y0": 0, "y1": 1,
                       "layer": "below", "line": {"width": 0}, "fillcolor": rgba(FINDING, 0.10 if sp.major else 0.05),
                       "name": "phase"})
        if sp.major:
            notes.append({"text": sp.label, "xref": "x4", "yref": "y4 domain", "x": a, "y": 1.0, "xanchor": "left",
                          "yanchor": "top", "showarrow": False, "font": {"size": 11, "color": FINDING},
                          "name": "phase"})
    return shapes, notes


def _axes(view: list[float], top: float, lane_rows: list[str], map_y: dict[str, Any],
          acc_top: float) -> dict[str, Any]:
    def time(n: int) -> dict[str, Any]:
        return axis(anchor=f"y{n}", matches="x", range=view)

    return {
        "xaxis": axis(anchor="y", domain=[0, 1], range=view),
        "yaxis": axis(domain=list(DOMAINS["memory"]), range=[0, top * 1.08 or 1], title={"text": "bytes"}),
        "xaxis2": time(2),
        "yaxis2": axis(domain=list(DOMAINS["lane"]), tickvals=list(range(len(lane_rows))), ticktext=lane_rows,
                       range=[-0.7, max(len(lane_rows), 1) - 0.3], fixedrange=True, showgrid=True),
        "xaxis3": time(3),
        "yaxis3": axis(domain=list(DOMAINS["map"]), **map_y),
        "xaxis4": time(4),
        "yaxis4": axis(domain=list(DOMAINS["accounting"]), range=[0, acc_top * 1.08 or 1],
                       title={"text": "resident"}),
        "xaxis5": time(5),
        "yaxis5": axis(domain=list(DOMAINS["activity"]), title={"text": "blocks/s"}, zeroline=True),
    }


def timeline_figure(trace: Trace, tl: Timeline, moments: list[Moment], spans: list[Span] | None = None,
                    facts: MapFacts | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's figure (five panels sharing the time axis) and what it holds."""
    t0, end = span_of(trace, tl)
    page = int(trace.meta.get("machine", {}).get("page_size", 4096))
    live = len(tl.live) > 0
    rss = len(tl.rss) > 0
    mem, mem_info = memory_traces(tl, t0, end, live, rss)
    seg = segment(trace.columns, tl.pid)
    lane, lane_rows, lane_info = lane_traces(seg, tl, page, t0, end - t0)
    amap, map_y, map_info = address_map(tl, t0, end, facts=facts)
    acts, act_info = activity_traces(activity(trace, tl.pid), t0, ("x5", "y5"))
    o = over_time(trace, tl.pid) if live else None
    if o is not None:
        accs, acc_info = accounting_traces(o, t0, ("x4", "y4"))
    else:
        accs, acc_info = [placeholder("accounting", ("x4", "y4"))], {"moments": 0}
    top = max((float(np.nanmax(t["y"])) for t in mem if len(t["y"])), default=1.0)
    dur_s = (end - t0) / 1e9
    view = active_window(seg, t0, end)
    layout: dict[str, Any] = {
        "height": HEIGHT, "margin": {"l": 130, "r": 24, "t": 36, "b": 100}, "hovermode": "closest",
        "barmode": "overlay", "dragmode": "zoom", "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "hoverlabel": {"align": "left", "namelength": -1},
        **_axes(view, top, lane_rows, map_y, acc_info.get("top", 0.0)),
        "legend": {"orientation": "h", "x": 0.07, "xanchor": "left", "y": DOMAINS["memory"][1] + 0.003,
                   "yanchor": "bottom", "bgcolor": "rgba(0,0,0,0)", "traceorder": "normal"},
        "legend2": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.045, "yanchor": "top",
                    "bgcolor": "rgba(0,0,0,0)", "traceorder": "normal"},
        "legend3": {"orientation": "h", "x": 0.2, "xanchor": "left", "y": DOMAINS["accounting"][1] + 0.003,
                    "yanchor": "bottom", "bgcolor": "rgba(0,0,0,0)", "traceorder": "normal", "font": {"size": 11}},
        "annotations": [_panel_title("memory", DOMAINS["memory"][1] + 0.005),
                        _panel_title("resident, by cause", DOMAINS["accounting"][1] + 0.005),
                        _panel_title("allocator activity", DOMAINS["activity"][1] + 0.005),
                        _panel_title("calls", DOMAINS["lane"][1] + 0.005),
                        _panel_title("address space", DOMAINS["map"][1] + 0.005)],
        "shapes": [],
        "meta": {"time_axes": ["xaxis", "xaxis2", "xaxis3", "xaxis4", "xaxis5"], "byte_axes": ["yaxis", "yaxis4"],
                 "duration_s": dur_s, "view": view},
    }
    if o is None:
        layout["annotations"].append({"text": "allocator calls were not traced: nothing to account",
                                      "xref": "paper", "yref": "paper", "x": 0.5, "y": sum(DOMAINS["accounting"]) / 2,
                                      "showarrow": False, "font": {"size": 12}})
    if not act_info["busy_slices"]:
        acts.append(placeholder("activity", ("x5", "y5")))
        layout["annotations"].append({"text": "no allocator calls traced", "xref": "paper", "yref": "paper", "x": 0.5,
                                      "y": sum(DOMAINS["activity"]) / 2, "showarrow": False, "font": {"size": 12}})
    shapes, notes = _spans(spans or [] if o is not None else [], t0)
    layout["shapes"] += shapes
    layout["annotations"] += notes
    for y in map_info.pop("breaks"):  # holes in the address space, collapsed
        layout["shapes"].append({"type": "line", "xref": "x3 domain", "yref": "y3", "x0": 0, "x1": 1, "y0": y,
                                 "y1": y, "line": {"width": 1, "dash": "dot", "color": "rgba(128,128,128,0.6)"}})
    for mo in moments:
        x = (mo.ts - t0) / 1e9
        layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                                 "line": {"width": 1.5, "dash": "dash", "color": rgba(FINDING, 0.7)},
                                 "name": f"finding-{mo.number}"})
        layout["annotations"].append({"text": str(mo.number), "xref": "x", "yref": "paper", "x": x, "y": 1.0,
                                      "yanchor": "bottom", "showarrow": False, "bgcolor": FINDING,
                                      "font": {"color": "#ffffff", "size": 11}, "borderpad": 2,
                                      "captureevents": True, "name": f"finding-{mo.number}"})
    fig = {"data": mem + accs + acts + lane + amap, "layout": layout,
           "config": {"displaylogo": False, "responsive": True, "scrollZoom": False,
                      "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}}
    info = {"t0": t0, "end": end, "memory": mem_info, "lane": lane_info, "map": map_info, "activity": act_info,
            "accounting": acc_info, "buckets": BUCKETS, "live": live, "rss": rss}
    return fig, info
