"""Several traces side by side (``heapline compare a.trace b.trace ... -o cmp.html``).

Time is aligned on each process's own start (its execve when launched, the attach otherwise),
so runs of one program line up however long the launch took. ``overlay`` (the default) draws
one panel per measure (footprint, RSS anon, live, heap) with one colour per trace; ``stack``
draws one panel per trace with all its series. A table gives peak and final footprint, RSS,
live bytes, heap and bytes given back, each with its difference from the first trace.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tracer.analysis.calls import segment
from tracer.analysis.explain import explain
from tracer.analysis.model import Timeline, build
from tracer.analysis.otheralloc import family_of
from tracer.analysis.verdict import Line
from tracer.tracefile import Trace, open_trace
from tracer.units import human_bytes, human_ns
from viz.figures import SERIES, memory_traces, span_of
from viz.page import document, esc
from viz.reduce import step_rows
from viz.report import key_figures, read_findings, write_html
from viz.style import SEQUENCE, axis, seconds

MEASURES = ("footprint", "rss_anon", "live_bytes", "heap")
ROW_HEIGHT = 250


class Run:
    """One trace to compare: its timeline, start (ns, trace clock), end, figures and verdict."""

    def __init__(self, trace: Trace, label: str) -> None:
        self.trace, self.label = trace, label
        self.tl: Timeline = build(trace)
        t0, self.end = span_of(trace, self.tl)
        seg = segment(trace.columns, self.tl.pid)
        self.start = int(seg["ts"][0]) if len(seg) and not trace.meta.get("attached") else t0
        self.start = max(min(self.start, self.end - 1), t0)
        self.figures = key_figures(self.tl)
        self.live = len(self.tl.live) > 0
        self.findings: list[dict[str, Any]] = []
        self.verdict: list[Line] = []
        self.unexplained = ""
        try:
            self.findings, self.verdict = read_findings(trace, self.tl, [f.to_json() for f in explain(trace)])
        except MemoryError:
            raise
        except Exception as e:  # the comparison is still worth having without this run's findings
            self.unexplained = f"findings could not be computed ({type(e).__name__}: {e})"


def setting(trace: Trace) -> str:
    """How the run's memory was managed: the allocator traced, and the environment that changes it
    (LD_PRELOAD, MALLOC_*, GLIBC_TUNABLES), paths shortened to their file names."""
    alloc = (trace.meta.get("backend") or {}).get("allocator") or {}
    family = family_of(trace)
    parts = [f"{family} ({os.path.basename(str(alloc.get('library') or '?'))})" if family
             else "allocator not traced"]
    for k, v in sorted((trace.meta.get("malloc_env") or {}).items()):
        shown = ":".join(os.path.basename(x) for x in str(v).split(":")) if k == "LD_PRELOAD" else str(v)
        parts.append(f"{k}={shown}")
    return " · ".join(parts)


def _label(trace: Trace, i: int) -> str:
    cmd = trace.meta.get("command") or []
    name = shlex.join(str(a) for a in cmd) if cmd else os.path.basename(trace.path)
    return f"{i + 1}: {name} · {setting(trace)}"


def _measure_trace(run: Run, col: str, color: str, k: int, first_row: bool) -> dict[str, Any] | None:
    m = run.tl.memory
    if col == "live_bytes" and not run.live:
        return None
    ts = m["ts"].to_numpy(np.int64)
    vals = m[col].to_numpy(np.int64)
    rows, _ = step_rows(ts, [vals], run.start, run.end - run.start)
    if not len(rows):
        return None
    x, y = seconds(ts[rows], run.start), vals[rows].astype(np.float64)
    if run.end > ts[rows[-1]]:
        x, y = np.append(x, seconds(run.end, run.start)), np.append(y, y[-1])
    return {"type": "scatter", "mode": "lines", "name": esc(run.label), "x": x, "y": y, "xaxis": f"x{k or ''}",
            "yaxis": f"y{k or ''}", "line": {"shape": "hv", "width": 1.8, "color": color},
            "legendgroup": run.label, "showlegend": first_row, "hovertemplate": "%{text}<extra></extra>",
            "meta": {"hover": "bytes", "label": f"{esc(run.label)} · {SERIES[col][0]}", "series": col}}


def compare_figure(runs: list[Run], stack: bool = False) -> dict[str, Any]:
    """One panel per measure (overlay) or per trace (stack), on one time axis."""
    rows = len(runs) if stack else len(MEASURES)
    gap = 0.09
    h = (1 - gap * (rows - 1)) / rows
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "height": ROW_HEIGHT * rows + 90, "margin": {"l": 90, "r": 24, "t": 64, "b": 50}, "hovermode": "closest",
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "hoverlabel": {"align": "left", "namelength": -1}, "annotations": [],
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "traceorder": "normal",
                   "bgcolor": "rgba(0,0,0,0)"},
    }
    longest = max((r.end - r.start) / 1e9 for r in runs)
    for k in range(rows):
        top = 1 - k * (h + gap)
        suffix = "" if k == 0 else str(k + 1)
        layout[f"xaxis{suffix}"] = axis(anchor=f"y{suffix}", range=[0, longest],
                                        **({"matches": "x"} if k else {}))
        layout[f"yaxis{suffix}"] = axis(domain=[max(top - h, 0), top], rangemode="tozero",
                                        **({"matches": "y"} if stack and k else {}))  # one scale for every run
        title = esc(runs[k].label) if stack else SERIES[MEASURES[k]][0]
        layout["annotations"].append({"text": f"<b>{title}</b>", "xref": "paper", "yref": "paper", "x": 0,
                                      "y": top, "xanchor": "left", "yanchor": "bottom", "showarrow": False})
        if stack:
            run = runs[k]
            traces, _ = memory_traces(run.tl, run.start, run.end, run.live, len(run.tl.rss) > 0,
                                      axes=(f"x{suffix}", f"y{suffix}"), legend=k == 0)
            for t in traces:
                if "live" in t["meta"]:  # an index into the figure's data, not into this run's traces
                    t["meta"]["live"] += len(data)
            data += traces
        else:
            for i, run in enumerate(runs):
                t = _measure_trace(run, MEASURES[k], SEQUENCE[i % len(SEQUENCE)], k + 1 if k else 0, k == 0)
                if t is not None:
                    data.append(t)
    last = "" if rows == 1 else str(rows)
    layout[f"xaxis{last}"]["title"] = {"text": "time since the process started"}
    layout["legend"]["y"] = 1.0 + 24 / layout["height"]
    layout["meta"] = {"time_axes": [k for k in layout if k.startswith("xaxis")],
                      "byte_axes": [k for k in layout if k.startswith("yaxis")], "duration_s": longest,
                      "view": [0, longest]}
    return {"data": data, "layout": layout,
            "config": {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}}


def _cell(value: int, base: int | None) -> str:
    text = esc(human_bytes(value))
    if base is None or value == base:
        return text
    d = value - base
    return f"{text} <span class=\"sub\">({'+' if d > 0 else '−'}{esc(human_bytes(abs(d)))})</span>"


def _beyond_live(r: Run) -> int | None:
    """RSS anon the process holds beyond its live bytes at its end: what freeing did not bring down."""
    return r.figures["rss_anon"]["final"] - r.figures["live_bytes"]["final"] if r.live and len(r.tl.rss) else None


def _verdict_cell(r: Run) -> str:
    if r.unexplained:
        return esc(r.unexplained)
    kept = [ln for ln in r.verdict if ln.kind != "note"][:2]
    if not kept:
        return "nothing kept"
    return "".join(f"<div class=\"cv {esc(ln.weight)}\">{esc(ln.text)}</div>" for ln in kept)


def compare_table(runs: list[Run]) -> str:
    head = "".join(f"<th><span class=\"swatch\" style=\"background:{SEQUENCE[i % len(SEQUENCE)]}\"></span>"
                   f"{i + 1}</th>" for i in range(len(runs)))
    rows: list[tuple[str, list[str]]] = []
    for key, name in (("footprint", "footprint"), ("rss_anon", "RSS anon"), ("live_bytes", "live"),
                      ("heap", "heap"), ("anon_mapped", "anon mappings")):
        for which in ("peak", "final"):
            base = runs[0].figures[key][which]
            rows.append((f"{which} {name}", [_cell(r.figures[key][which], base) if key != "live_bytes" or r.live
                                             else "not traced" for r in runs]))
    beyond = [_beyond_live(r) for r in runs]
    rows.append(("resident beyond live (final RSS anon − live)",
                 [_cell(b, beyond[0]) if b is not None else "not traced" for b in beyond]))
    base = runs[0].figures["released"]["total"]
    rows.append(("given back to the kernel", [_cell(r.figures["released"]["total"], base) for r in runs]))
    rows.append(("releases", [esc(f"{r.figures['released']['count']:,}") for r in runs]))
    rows.append(("duration", [esc(human_ns(r.end - r.start)) for r in runs]))
    rows.append(("events", [esc(f"{len(r.trace.columns):,}") for r in runs]))
    rows.append(("lost events", [esc(f"{int(r.trace.meta.get('lost_total') or 0):,}") for r in runs]))
    rows.append(("verdict", [_verdict_cell(r) for r in runs]))
    rows.append(("findings", [esc(", ".join(sorted({f["code"] for f in r.findings})) or "none")
                              if not r.unexplained else esc(r.unexplained) for r in runs]))
    body = "".join(f"<tr><th>{esc(name)}</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>" for name, cells in rows)
    return f"<table class=\"compare\"><thead><tr><th></th>{head}</tr></thead>{body}</table>"


def _runs_html(runs: list[Run]) -> str:
    items = []
    for i, r in enumerate(runs):
        meta = r.trace.meta
        backend = (meta.get("backend") or {}).get("name") or "?"
        libc = (meta.get("libc") or {}).get("version") or "libc unknown"
        kernel = (meta.get("machine") or {}).get("kernel") or "kernel unknown"
        items.append(f"<li><span class=\"swatch\" style=\"background:{SEQUENCE[i % len(SEQUENCE)]}\"></span>"
                     f"<code>{esc(r.label)}</code> <span class=\"sub\">pid {r.tl.pid} · {esc(backend)} · "
                     f"{esc(kernel)} · {esc(libc)} · {esc(os.path.basename(r.trace.path))}</span></li>")
    return f"<ol class=\"runs\" style=\"list-style:none;padding:0\">{''.join(items)}</ol>"


def write_compare(traces: Sequence[str | os.PathLike[str] | Trace], out_html: str | os.PathLike[str],
                  stack: bool = False, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the comparison page of two or more traces; returns ``{"path", "bytes", "seconds", "traces",
    "figures"}`` (figures: each trace's key figures, in bytes). Raises HeaplineError as write_report does."""
    started = time.perf_counter()
    opened = [t if isinstance(t, Trace) else open_trace(os.fspath(t)) for t in traces]
    runs = [Run(t, labels[i] if labels and i < len(labels) else _label(t, i)) for i, t in enumerate(opened)]
    fig = compare_figure(runs, stack)
    height = fig["layout"]["height"]
    body = "".join([
        f"<main><header><h1>heapline: {len(runs)} traces compared</h1>{_runs_html(runs)}</header>",
        "<section><h2>Side by side</h2>", compare_table(runs), "</section>",
        "<section><h2>Over time</h2><div class=\"toolbar\"><button type=\"button\" data-reset=\"all\" "
        "data-figure=\"0\">the whole runs</button><span>time since each process started (its execve, or the "
        "attach); drag to zoom, every panel follows.</span></div>",
        f"<p id=\"hl-error\" hidden></p><div id=\"hl-fig-0\" class=\"figure\" style=\"height:{height}px\"></div>",
        "</section></main>",
    ])
    text = document(f"heapline: {len(runs)} traces compared", body, {"figures": [{"div": "hl-fig-0", "figure": fig}]})
    size = write_html(text, out_html)
    return {"path": os.fspath(out_html), "bytes": size, "seconds": round(time.perf_counter() - started, 3),
            "traces": [r.label for r in runs], "figures": [r.figures for r in runs]}
