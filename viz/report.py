"""The HTML report of one trace (``heapline report``, ``heapline record --html``).

:func:`write_report` reads a trace (or takes an open one), builds the timeline model and writes
one self-contained page: the command, then, when findings are given, the verdict
(tracer.analysis.verdict: one line per phase that kept memory and one for the end, largest first,
each zooming the charts to its span), the recording's details folded (pid, duration, backend, lost
events, kernel, libc), the key figures, memory over time, the event lane and the address-space map
on one shared time axis, and each finding linked to its moment on that axis.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracer.analysis.accounting import last_moment, main_free_runs, mmapped_chunks
from tracer.analysis.explain import condensed
from tracer.analysis.model import Timeline, build
from tracer.analysis.otheralloc import family_of
from tracer.analysis.processes import processes
from tracer.analysis.sites import recorded_stacks, site_figures
from tracer.analysis.verdict import Line, verdict
from tracer.errors import Exit, HeaplineError
from tracer.tracefile import Trace, open_trace
from tracer.units import human_bytes, human_ns
from viz.addrmap import MapFacts
from viz.figures import HEIGHT, Moment, Span, span_of, timeline_figure
from viz.glossary import glossary_html, term
from viz.lane import at, released_by_call
from viz.page import document, esc, table
from viz.processes import processes_nav
from viz.sites import SitesAt, sites_html

FINDING_KEYS = ("code", "message", "evidence", "ts")


def _int(v: Any) -> int:
    return int(v) if v is not None else 0


def key_figures(tl: Timeline) -> dict[str, Any]:
    """Peak and final of each memory series, and bytes given back, in bytes."""
    m = tl.memory
    out: dict[str, Any] = {}
    for col in ("footprint", "heap", "anon_mapped", "live_bytes", "retained"):
        s = m[col] if len(m) else None
        out[col] = {"peak": _int(s.max()) if s is not None else 0, "final": _int(s.iloc[-1]) if s is not None else 0}
    rss = tl.rss
    out["rss_anon"] = {"peak": _int(rss["anon_high"].max()) if len(rss) else 0,
                       "final": _int(rss["anon"].iloc[-1]) if len(rss) else 0}
    by_call = released_by_call(tl.releases)
    out["released"] = {"total": int(sum(by_call.values())), "by_call": by_call, "count": int(len(tl.releases))}
    return out


def normalize_findings(findings: Sequence[dict[str, Any]] | None, t0: int, end: int) -> list[dict[str, Any]]:
    """Check findings and put each ``ts`` on the trace clock: ``ts`` is an event time (trace clock ns);
    a value smaller than the start of the recording is taken as ns since the start."""
    out = []
    for i, f in enumerate(findings or []):
        if not isinstance(f, dict) or not isinstance(f.get("code"), str) or not isinstance(f.get("message"), str):
            raise HeaplineError(f"finding {i + 1} needs a string 'code' and 'message'", Exit.USAGE)
        ev = f.get("evidence") or {}
        if not isinstance(ev, dict):
            raise HeaplineError(f"finding {i + 1}: 'evidence' must be an object", Exit.USAGE)
        ts = f.get("ts")
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, int | float):
                raise HeaplineError(f"finding {i + 1}: 'ts' must be an integer (ns) or null", Exit.USAGE)
            ts = int(ts) + (t0 if int(ts) < t0 else 0)
        out.append({"number": i + 1, "code": f["code"], "message": f["message"], "evidence": ev, "ts": ts})
    return out


BYTE_KEYS = ("bytes", "size", "footprint", "rss", "heap", "freed", "free_", "allocated_again", "top_pad", "threshold",
             "_len", "length", "by_call", "by_advice")
LIST_MAX = 12
ADDRESS_KEYS = ("addr", "address", "start", "end", "ptr", "brk")


def _evidence_value(key: str, v: Any, depth: int = 0, parent: str = "") -> str:
    """One evidence value for people: sizes in KiB/MiB with the exact count, addresses in hex, nested
    objects as key: value lists. Everything is escaped."""
    k = key.lower()
    if isinstance(v, bool) or v is None:
        return esc(json.dumps(v))
    if isinstance(v, int):
        in_bytes = any(t in p for p in (k, parent) for t in BYTE_KEYS)
        if not in_bytes and (k in ADDRESS_KEYS or k.endswith(("_addr", "_ptr"))):
            return f"<code>{v:#x}</code>"
        if in_bytes and not any(t in k for t in ("pages", "count", "calls", "blocks", "runs", "chunks")):
            return f"{esc(human_bytes(v))} <span class=\"sub\">({v:,} bytes)</span>"
        if k.endswith("_ns") or k in ("ns", "dur", "duration"):
            return esc(human_ns(v))
        return esc(str(v) if k in ("pid", "tid", "exit_code", "signal") else f"{v:,}")
    if isinstance(v, float):
        return esc(f"{v:g} s" if k.endswith("_s") else f"{v:g}")
    if isinstance(v, str):
        return f"<code>{esc(v)}</code>" if v.startswith("0x") else esc(v)
    if isinstance(v, dict) and depth < 2:
        return "; ".join(f"{esc(kk)}: {_evidence_value(str(kk), vv, depth + 1, k)}" for kk, vv in v.items())
    if isinstance(v, list) and depth < 2:
        more = f" … ({len(v) - LIST_MAX:,} more)" if len(v) > LIST_MAX else ""
        if all(isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x) for x in v):
            return ", ".join(f"<code>{esc(a)}–{esc(b)}</code>" for a, b in v[:LIST_MAX]) + esc(more)
        return ", ".join(_evidence_value(key, x, depth + 1, parent) for x in v[:LIST_MAX]) + esc(more)
    return f"<code>{esc(json.dumps(v, default=str))}</code>"


def findings_html(findings: list[dict[str, Any]], t0: int) -> str:
    if not findings:
        return ""
    items = []
    for f in findings:
        when = ""
        if f["ts"] is not None:
            s = (f["ts"] - t0) / 1e9
            when = f" <button type=\"button\" data-goto=\"{s!r}\" data-figure=\"0\">at {esc(at(f['ts'] - t0))}</button>"
        ev = "".join(f"<dt>{esc(k)}</dt><dd>{_evidence_value(str(k), v)}</dd>" for k, v in f["evidence"].items())
        items.append(
            f"<li class=\"finding\" id=\"finding-{f['number']}\"><span class=\"num\">{f['number']}</span>"
            f"<span class=\"code\">{esc(f['code'])}</span>{when}<p class=\"msg\">{esc(f['message'])}</p>"
            + (f"<dl>{ev}</dl>" if ev else "") + "</li>"
        )
    return (f"<section id=\"findings\"><h2>Findings ({len(findings)})</h2>"
            f"<ol class=\"findings\">{''.join(items)}</ol></section>")


def header_html(trace: Trace, tl: Timeline, t0: int, end: int) -> tuple[str, str]:
    """The page's title (command, pid, duration, backend) and the recording's details, folded."""
    meta = trace.meta
    command = shlex.join(str(a) for a in meta.get("command") or []) or "(unknown command)"
    root = int(meta.get("pid") or tl.pid)
    child = tl.pid != root
    mode = (f"traced as a child of pid {root}" if child else "attached to" if meta.get("attached") else "launched")
    code = None if child else meta.get("exit_code")  # the traced process's; a child's is in its findings
    start = meta.get("start_realtime_ns")
    started = datetime.fromtimestamp(start / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if start else "unknown"
    backend = meta.get("backend") or {}
    lost = int(meta.get("lost_total") or 0)
    lost_html = (f"<span class=\"bad\">{lost:,} lost</span>" + esc(f" ({_lost_detail(meta)})")) if lost else "none"
    alloc = backend.get("allocator") or {}
    allocator = (f"{alloc.get('family', '?')} ({alloc.get('library', '?')})" if alloc.get("traced")
                 else f"not traced ({alloc.get('reason', 'not recorded')})")
    libc = meta.get("libc") or {}
    machine = meta.get("machine") or {}
    ev = trace.columns
    mine = int((ev["pid"] == tl.pid).sum())
    left = [
        ("command", f"<code>{esc(command)}</code>" + (esc(f" (pid {root}'s)") if child else "")),
        ("pid", esc(f"{tl.pid} ({mode}" + (f", exit code {code})" if code is not None else ")"))),
        ("duration", esc(f"{human_ns(end - t0)} (recorded {started})")),
        ("events", esc(f"{len(ev):,}" + (f" ({mine:,} of pid {tl.pid})" if mine != len(ev) else ""))),
        ("lost events", lost_html),
    ]
    right = [
        ("backend", esc(backend.get("name") or "unknown")),
        ("allocator", esc(allocator)),
        ("kernel", esc(f"{machine.get('kernel', 'unknown')} {machine.get('machine', '')}".strip())),
        ("libc", esc(f"{libc.get('version') or 'unknown'} ({libc.get('path', '?')})" if libc else "unknown")),
        ("trace", esc(os.path.basename(trace.path))
         + ("" if trace.complete else " <span class=\"bad\">incomplete</span>")),
    ]
    runs = next((p.program for p in processes(trace) if p.pid == tl.pid and p.named_by == "exec"), "")
    name = (f"pid {tl.pid}" + (f" <code>{esc(runs)}</code>" if runs else "")
            + f", a child of <code>{esc(command)}</code>" if child else f"<code>{esc(command)}</code>")
    title = (f"<header><h1>heapline: {name}</h1>"
             f"<p class=\"sub\">pid {tl.pid} · {esc(human_ns(end - t0))} · {esc(backend.get('name') or '?')}"
             + (" · <span class=\"bad\">events lost</span>" if lost else "") + "</p></header>")
    details = (f"<details id=\"recording\"><summary>The recording: command, pid, events, backend, allocator, "
               f"kernel, libc</summary><div class=\"grid\">{table(left)}{table(right)}</div></details>")
    return title, details


def verdict_html(lines: list[Line], t0: int) -> str:
    """The verdict: each line a button that zooms the charts to its span, then the findings it rests on."""
    if not lines:
        return ""
    items = []
    for ln in lines:
        a, b = (ln.start - t0) / 1e9, (ln.end - t0) / 1e9
        refs = "".join(f"<a href=\"#finding-{n}\" class=\"ref\">{esc(c)}</a>"
                       for n, c in zip(ln.findings, ln.codes, strict=True))
        items.append(f"<li class=\"v {ln.kind} {ln.weight}\" data-codes=\"{esc(' '.join(ln.codes))}\" "
                     f"data-bytes=\"{ln.bytes}\"><button type=\"button\" class=\"vline\" data-span=\"{a!r},{b!r}\" "
                     f"data-figure=\"0\" title=\"zoom the charts to this span\">{esc(ln.text)}</button>"
                     f"<span class=\"refs\">{refs}</span></li>")
    return (f"<section id=\"verdict\" aria-label=\"verdict\"><ol class=\"verdict\">{''.join(items)}</ol>"
            "</section>")


def _lost_detail(meta: dict[str, Any]) -> str:
    reasons = (meta.get("backend_end") or meta.get("backend") or {}).get("lost_by_reason") or {}
    parts = [f"{k.replace('_', ' ')}: {v:,}" for k, v in reasons.items() if v]
    return "; ".join(parts) or "see the trace"


def figures_html(k: dict[str, Any], live: bool) -> str:
    rows = [(term("footprint", "footprint (heap + anonymous)"), "footprint"),
            (term("heap", "heap (break − start_brk)"), "heap"), (esc("anonymous mappings"), "anon_mapped"),
            (term("RSS anon"), "rss_anon")]
    if live:
        rows += [(term("live", "live (requested, not freed)"), "live_bytes"),
                 (term("retained", "retained (footprint − live)"), "retained")]
    body = "".join(f"<tr><th>{name}</th><td>{esc(human_bytes(k[key]['peak']))}</td>"
                   f"<td>{esc(human_bytes(k[key]['final']))}</td></tr>" for name, key in rows)
    rel = k["released"]
    parts = ", ".join(f"{esc(c)} {esc(human_bytes(b))}" for c, b in rel["by_call"].items()) or "none"
    return (f"<table class=\"figures\"><thead><tr><th></th><th>peak</th><th>final</th></tr></thead>{body}</table>"
            f"<p>given back to the kernel: <b>{esc(human_bytes(rel['total']))}</b> in {rel['count']:,} releases"
            f" ({parts})</p>")


def reduction_html(info: dict[str, Any]) -> str:
    mem, lane, amap = info["memory"], info["lane"], info["map"]
    lines = []
    if mem["reduced"]:
        lines.append(f"Memory: {mem['rows']:,} moments drawn as {mem['points']:,} points per series. A series with "
                     f"many changes keeps, in each of {info['buckets']:,} slices of the run, its first, last, lowest "
                     "and highest value at their true times: every peak and trough is drawn.")
    if lane["reduced"]:
        lines.append(f"Calls: {lane['calls']:,} calls drawn as {lane['markers']:,} markers, one per kind, direction "
                     "and slice (the largest; its hover says how many it stands for). Every slice that gave memory "
                     "back keeps a release marker.")
    if amap["releases_reduced"]:
        lines.append(f"Address space: {amap['releases']:,} releases marked one per call and slice (the largest, "
                     "with the count and bytes of the rest).")
    if amap["slices_merged"]:
        lines.append(f"Address space: {amap['slices_merged']:,} slices of thread heaps (cut by mprotect a few pages "
                     "at a time) are drawn merged with their neighbours, made and ended within one slice of the run "
                     "of them; each bar's hover says how many it holds.")
    if amap["bars_dropped"]:
        lines.append(f"Address space: {amap['bars_dropped']:,} of {amap['mappings'] - amap['slices_merged']:,} "
                     "mappings, each shorter-lived and smaller than those drawn, are not drawn as bars (their "
                     "releases are still marked).")
    if not lines:
        return ""
    body = "".join(f"<p>{esc(t)}</p>" for t in lines)
    return f"<div class=\"note\" id=\"reduced\"><p><b>Reduced for drawing.</b></p>{body}</div>"


def notes_html(trace: Trace, tl: Timeline, info: dict[str, Any]) -> str:
    notes = list(trace.notes)
    if not info["live"]:
        notes.append("Allocator calls were not traced: live bytes and the retained gap are not shown.")
    if not info["rss"]:
        notes.append("No RSS samples in this trace.")
    pids = trace.columns["pid"]
    elsewhere = pids != tl.pid
    others = sorted(set(pids[elsewhere].tolist())) if elsewhere.any() else []
    if others:
        notes.append(f"Shown: pid {tl.pid}. Also traced, not shown: pid {', '.join(map(str, others[:20]))}"
                     + (" ..." if len(others) > 20 else "") + ".")
    if not notes:
        return ""
    return "<div class=\"note\">" + "".join(f"<p>{esc(n)}</p>" for n in notes) + "</div>"


def info_live(tl: Timeline) -> bool:
    """Allocator calls were traced: live bytes, and the accounting built from them, exist."""
    return len(tl.live) > 0


def read_findings(trace: Trace, tl: Timeline, findings: Sequence[dict[str, Any]] | None
                  ) -> tuple[list[dict[str, Any]], list[Line]]:
    """The findings as the page shows them (checked, numbered, exits of many helpers condensed) and
    their verdict."""
    t0, end = span_of(trace, tl)
    found = [{**f, "number": i + 1} for i, f in enumerate(condensed(normalize_findings(findings, t0, end), tl.pid))]
    return found, verdict(found, tl.pid, t0, end)


def site_moments(trace: Trace, tl: Timeline, lines: list[Line], t0: int, live: bool) -> list[SitesAt]:
    """The moments of the "who holds it" tables: the end, then the middle of each phase that kept memory."""
    if not live or recorded_stacks(trace) is None:
        return []
    out = [SitesAt("at the end", site_figures(trace, tl.pid))]
    out[0].label = f"at the end ({(out[0].figures.at - t0) / 1e9:.3f} s)"
    for ln in lines:
        if ln.kind == "kept":
            mid = (ln.start + ln.end) // 2
            out.append(SitesAt(f"during {(ln.start - t0) / 1e9:.3f}–{(ln.end - t0) / 1e9:.3f} s "
                               f"({ln.text.split(':')[0]}), at {(mid - t0) / 1e9:.3f} s",
                               site_figures(trace, tl.pid, mid)))
    return out


def build_report(trace: Trace, findings: Sequence[dict[str, Any]] | None = None,
                 pid: int | None = None, pages: dict[int, str] | None = None) -> tuple[str, dict[str, Any]]:
    """The page of process ``pid`` (the traced one by default) and what it holds; ``pages``: the
    file names of the processes' pages, for the process selector."""
    tl = build(trace, pid)
    t0, end = span_of(trace, tl)
    found, lines = read_findings(trace, tl, findings)
    moments = [Moment(f["number"], f["ts"], f["code"]) for f in found if f["ts"] is not None]
    spans = [Span(ln.start, ln.end, ln.text.split(":")[0], ln.weight == "major") for ln in lines if ln.kind == "kept"]
    pin = next((f["evidence"] for f in found if f["code"] == "BRK_PINNED_BY_LIVE_CHUNK"
                and isinstance((f["evidence"] or {}).get("block"), dict)), None)
    last = last_moment(trace, tl.pid)
    runs = main_free_runs(trace, last, tl.pid) if info_live(tl) else None
    facts = MapFacts(family_of(trace), mmapped_chunks(trace, tl.pid), pin, runs, last)
    fig, info = timeline_figure(trace, tl, moments, spans, facts)
    k = key_figures(tl)
    sites = site_moments(trace, tl, lines, t0, info["live"])
    title, details = header_html(trace, tl, t0, end)
    body = "".join([
        "<main>", title, processes_nav(processes(trace), tl.pid, pages or {}), verdict_html(lines, t0), details,
        "<section id=\"figures\"><h2>Key figures</h2>", figures_html(k, info["live"]), "</section>",
        notes_html(trace, tl, info),
        "<section id=\"timeline\"><h2>Timeline</h2>", reduction_html(info),
        "<div class=\"toolbar\"><button type=\"button\" data-reset=\"view\" data-figure=\"0\">the process</button>"
        "<button type=\"button\" data-reset=\"all\" data-figure=\"0\">the whole recording</button>"
        "<span>time since the recording started; drag to zoom into a time range (every panel follows), "
        "double-click to see it all. Hover a marker for the call.</span></div>",
        "<p id=\"hl-error\" hidden></p>",
        f"<div id=\"hl-fig-0\" class=\"figure\" style=\"height:{HEIGHT}px\"></div>", glossary_html(), "</section>",
        sites_html(sites), findings_html(found, t0),
        f"<footer>{esc(trace.meta.get('tool') or 'heapline')} · report built "
        f"{esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</footer></main>",
    ])
    command = shlex.join(str(a) for a in trace.meta.get("command") or []) or "trace"
    html_text = document(f"heapline: {command} (pid {tl.pid})", body, {"figures": [{"div": "hl-fig-0", "figure": fig}]})
    panels = (["memory", "resident by cause", "allocator activity", "calls", "address space"]
              + (["who holds it"] if sites else []) + (["findings"] if found else []))
    built = {
        "events": int(len(trace.columns)), "pid": tl.pid, "panels": panels, "findings": len(found),
        "reduced": bool(info["memory"]["reduced"] or info["lane"]["reduced"] or info["map"]["releases_reduced"]
                        or info["map"]["bars_dropped"] or info["map"]["slices_merged"]),
        "memory_points": info["memory"]["points"], "lane_markers": info["lane"]["markers"],
        "activity": info["activity"], "accounting": info["accounting"],
        "mappings": info["map"]["mappings"], "mapping_bars_dropped": info["map"]["bars_dropped"],
        "mapping_slices_merged": info["map"]["slices_merged"],
        "releases": info["map"]["releases"], "figures": k, "traces": [t.get("name") for t in fig["data"]],
        "verdict": [ln.to_json() for ln in lines],
        "sites": [{"label": x.label, "at": x.figures.at, "sites": len(x.figures.values)} for x in sites],
    }
    return html_text, built


def write_html(text: str, out_html: str | os.PathLike[str]) -> int:
    """Write the page next to its final name, then rename it into place; returns its size."""
    out = Path(out_html)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".heapline-", suffix=".html", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise HeaplineError(f"cannot write the report to {out}: {e.strerror or e}", Exit.OUTPUT_NOT_WRITABLE) from e
    return out.stat().st_size


def write_report(trace: str | os.PathLike[str] | Trace, out_html: str | os.PathLike[str],
                 findings: Sequence[dict[str, Any]] | None = None, pid: int | None = None,
                 pages: dict[int, str] | None = None) -> dict[str, Any]:
    """Write the HTML report of ``trace`` (a path or an open Trace) to ``out_html``; returns what was built:
    ``{"path", "bytes", "seconds", "events", "pid", "panels", "findings", "reduced", "memory_points",
    "lane_markers", "mappings", "mapping_bars_dropped", "mapping_slices_merged", "releases", "figures", "traces",
    ...}``.
    ``pid``: draw that traced process (a child) instead of the traced one; ``findings`` are then its own.
    ``pages``: pid -> file name of each process's page (relative to this one), for the selector.
    Raises HeaplineError (BAD_TRACE, USAGE for malformed findings, OUTPUT_NOT_WRITABLE)."""
    started = time.perf_counter()
    t = trace if isinstance(trace, Trace) else open_trace(os.fspath(trace))
    text, built = build_report(t, findings, pid, pages)
    size = write_html(text, out_html)
    return {"path": os.fspath(out_html), "bytes": size, "seconds": round(time.perf_counter() - started, 3), **built}
