"""The HTML report, without a browser: the data the page embeds, the reduction, escaping, compare, the commands."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, num, parse_report

from tracer.analysis.model import build
from tracer.commands import compare as compare_cmd
from tracer.commands import report as report_cmd
from tracer.errors import Exit, HeaplineError
from tracer.tracefile import Trace, open_trace
from tracer.units import human_bytes
from viz import addrmap, lane
from viz.compare import write_compare
from viz.reduce import BUCKETS, MARKER_BUCKETS, extrema_rows, representatives, step_rows
from viz.report import write_report

TRACES = ROOT / "traces"
PANELS = ["memory", "resident by cause", "allocator activity", "calls", "address space"]
SAMPLES = ["phases", "phases-strace", "phases-attach", "forker"]
HOSTILE = "<img src=x onerror=alert(1)>"
CLOSER = "</script><script>alert(2)</script>"


def embedded(page: str) -> dict:
    """The page's JSON data with its typed arrays decoded (numpy) and shared arrays resolved."""
    m = re.search(r'<script type="application/json" id="hl-data">(.*?)</script>', page, re.S)
    assert m, "no data block"
    shared: dict[int, np.ndarray] = {}

    def unpack(o):
        if isinstance(o, list):
            return [unpack(v) for v in o]
        if isinstance(o, dict):
            if "bdata" in o:
                shared[o["id"]] = np.frombuffer(base64.b64decode(o["bdata"]), dtype="<f8")
                return shared[o["id"]]
            if set(o) == {"ref"}:
                return shared[o["ref"]]
            return {k: unpack(v) for k, v in o.items()}
        return o

    return unpack(json.loads(m.group(1)))


def figure(page: str) -> dict:
    return embedded(page)["figures"][0]["figure"]


def traces_of(fig: dict, **meta) -> list[dict]:
    return [t for t in fig["data"] if all((t.get("meta") or {}).get(k) == v for k, v in meta.items())]


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> tuple[str, dict, Trace]:
    out = tmp_path_factory.mktemp("report") / "phases.html"
    t = open_trace(str(TRACES / "phases.trace"))
    built = write_report(t, out)
    return out.read_text(), built, t


@pytest.mark.parametrize("name", SAMPLES)
def test_report_of_each_sample(name: str, tmp_path) -> None:
    out = tmp_path / f"{name}.html"
    built = write_report(TRACES / f"{name}.trace", out)
    page = out.read_text()
    t = open_trace(str(TRACES / f"{name}.trace"))
    meta = t.meta
    assert built["bytes"] == out.stat().st_size and built["events"] == len(t.events)
    assert built["panels"] == PANELS and built["findings"] == 0
    assert not built["reduced"]
    # the header: command, pid, duration, backend, lost events, kernel, libc
    for text in (meta["command"][0], f"{meta['pid']}", meta["backend"]["name"], meta["machine"]["kernel"],
                 meta["libc"]["version"], "lost events"):
        assert text in page, text
    # self-contained: plotly.js inlined, nothing fetched, a CSP that allows nothing remote
    assert "plotly.js (basic - minified) v" in page and "plotly.js v" not in page  # the partial bundle
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    fig = figure(page)
    series = {t["meta"]["series"] for t in traces_of(fig, panel="memory")}
    assert {"heap", "anon_mapped", "footprint"} <= series
    assert ("live_bytes" in series) == (name != "phases-strace")
    assert traces_of(fig, panel="lane") and traces_of(fig, panel="map")
    assert 'id="findings"' not in page and "Findings" not in page


def test_memory_series_are_the_models(phases) -> None:
    page, built, t = phases
    tl = build(t)
    rep = parse_report((TRACES / "phases.out").read_text())
    fig = figure(page)
    by = {tr["meta"]["series"]: tr for tr in traces_of(fig, panel="memory")}
    for col in ("heap", "anon_mapped", "footprint", "live_bytes", "rss_anon"):
        y = by[col]["y"]
        assert y.max() == tl.memory[col].max() and y[-1] == tl.memory[col].iloc[-1], col
    assert by["heap"]["y"].max() == rep.brk("alloc") - rep.brk("start")
    # the retained gap: shaded from footprint down to live
    band = by["retained"]
    assert band["fill"] == "tonexty" and fig["data"].index(band) == fig["data"].index(by["live_bytes"]) + 1
    foot = by["footprint"]
    at = np.searchsorted(foot["x"], band["x"], side="right") - 1
    assert np.array_equal(foot["y"][at], band["y"])  # the band's top is the footprint, step for step
    assert built["figures"]["footprint"]["peak"] == tl.memory["footprint"].max()
    assert f"{built['figures']['released']['total']}" and "given back to the kernel" in page


def test_lane_hover_is_the_call_as_strace_prints_it(phases) -> None:
    page, _, _ = phases
    rep = parse_report((TRACES / "phases.out").read_text())
    fig = figure(page)
    text = [h for tr in traces_of(fig, panel="lane", kind="madvise") for h in tr["hovertext"]]
    advice = {4: "MADV_DONTNEED", 8: "MADV_FREE"}
    for kv in rep.all("madvise"):
        call = f"madvise({num(kv['addr']):#x}, {kv['len']}, {advice[int(kv['advice'])]}) = 0"
        (hit,) = [h for h in text if call in h]
        assert "took " in hit and f"gave back {human_bytes(int(kv['len']))} (" in hit and "break after: 0x" in hit
    brk = [h for tr in traces_of(fig, panel="lane", kind="brk") for h in tr["hovertext"]]
    assert any(f"= {rep.brk('alloc'):#x}" in h for h in brk)
    rows = fig["layout"]["yaxis2"]["ticktext"]
    assert rows[:6] == ["brk", "mmap", "munmap", "mremap", "madvise", "mprotect"]


def test_every_release_is_marked(phases) -> None:
    page, _, t = phases
    tl = build(t)
    fig = figure(page)
    marks = [tr for tr in traces_of(fig, panel="map") if tr["meta"]["what"].startswith("release-")
             and tr["meta"]["what"] != "release-range"]
    assert sum(len(tr["x"]) for tr in marks) == len(tl.releases)
    text = "".join(h for tr in marks for h in tr["hovertext"])
    for start, end in zip(tl.releases["start"], tl.releases["end"], strict=True):
        assert f"{int(start):#x}–{int(end):#x}" in text
    assert "released by madvise(MADV_FREE)" in text and "released by brk" in text
    # the heap band follows the break; mappings are bars over their lifetime
    (heap,) = traces_of(fig, panel="map", what="heap")
    assert heap["fill"] == "tonexty"
    assert {int(h.split("<br>")[0].split()[1], 16) for h in heap["hovertext"]} == set(tl.breaks["brk"].tolist())
    bars = [tr for tr in traces_of(fig, panel="map") if tr["type"] == "bar"]
    assert sum(len(b["x"]) for b in bars) == len(tl.mappings)


def test_findings_are_linked_to_their_moment(tmp_path) -> None:
    t = open_trace(str(TRACES / "phases.trace"))
    tl = build(t)
    mad = tl.releases[tl.releases["call"] == "madvise"]
    ts = int(mad["ts"].iloc[0])
    findings = [
        {"code": "MADVISED", "message": "given back", "evidence": {"addr": int(mad["start"].iloc[0]), "bytes": 8192},
         "ts": ts},
        {"code": "RELATIVE", "message": "ns since the start", "evidence": {}, "ts": ts - tl.t0},
        {"code": "TIMELESS", "message": "no moment", "evidence": {"note": "x"}, "ts": None},
    ]
    built = write_report(t, tmp_path / "f.html", findings)
    page = (tmp_path / "f.html").read_text()
    assert built["findings"] == 3 and built["panels"][-1] == "findings"
    assert page.count('class="finding"') == 3 and page.count("data-goto=") == 2
    secs = (ts - tl.t0) / 1e9
    assert page.count(f'data-goto="{secs!r}"') == 2
    assert f"{int(mad['start'].iloc[0]):#x}" in page and "8 KiB" in page
    lines = [s for s in figure(page)["layout"]["shapes"] if s.get("name", "").startswith("finding-")]
    assert [s["x0"] for s in lines] == [secs, secs]


def test_bad_findings_are_refused(tmp_path) -> None:
    for bad in ([{"message": "no code"}], [{"code": "X", "message": "m", "ts": "soon"}], ["nope"],
                [{"code": "X", "message": "m", "evidence": [1]}]):
        with pytest.raises(HeaplineError) as e:
            write_report(TRACES / "phases.trace", tmp_path / "x.html", bad)
        assert e.value.code == Exit.USAGE


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, attrs))


def hostile_trace() -> Trace:
    t = open_trace(str(TRACES / "phases.trace"))
    h = copy.deepcopy(t.header)
    h["command"] = [f"/tmp/{HOSTILE}", CLOSER, "&amp; \u2028"]
    h["machine"]["kernel"] = "<svg onload=alert(3)>"
    end = copy.deepcopy(t.end)
    end["libc"] = {"path": "/lib/<script>alert(4)</script>.so", "version": "</title><img src=x onerror=alert(5)>"}
    return Trace(f"/tmp/{HOSTILE}.trace", h, end, t.events, t.complete, [f"note {CLOSER}"])


HOSTILE_FINDINGS = [{"code": HOSTILE, "message": CLOSER, "evidence": {HOSTILE: CLOSER, "sym": "<b>operator new</b>"},
                     "ts": None}]


def test_everything_from_the_target_is_escaped(tmp_path) -> None:
    write_report(hostile_trace(), tmp_path / "x.html", HOSTILE_FINDINGS)
    page = (tmp_path / "x.html").read_text()
    p = Tags()
    p.feed(page)
    names = [tag for tag, _ in p.tags]
    assert names.count("script") == 3 and "img" not in names and "svg" not in names
    assert not [a for _, attrs in p.tags for a, _ in attrs if a.startswith("on")]
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;/script&gt;&lt;script&gt;alert(2)" in page
    data = re.search(r'<script type="application/json" id="hl-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data
    # outside the inlined scripts, no raw payload survives
    outside = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S)
    for raw in ("<img", "<svg", "alert(4)</script>", "<b>operator"):
        assert raw not in outside, raw


def test_reduction_keeps_every_extreme() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    ts = np.sort(rng.integers(0, 10**9, n)).astype(np.int64)
    v = np.cumsum(rng.integers(-1000, 1000, n))
    v[rng.integers(0, n, 30)] += 10**7  # lone spikes
    rows = extrema_rows(ts, v, 0, 10**9)
    assert len(rows) <= 4 * BUCKETS and rows[0] == 0 and rows[-1] == n - 1
    b = ts * BUCKETS // 10**9
    for bucket in np.unique(b)[::37]:
        inside = np.flatnonzero(b == bucket)
        kept = np.intersect1d(rows, inside)
        assert v[kept].max() == v[inside].max() and v[kept].min() == v[inside].min()
    assert v[rows].max() == v.max() and v[rows].min() == v.min()
    # a frame of step series: a series with few changes keeps them all
    steps = np.repeat(np.arange(50), n // 50)
    rows, reduced = step_rows(ts, [v, steps], 0, 10**9)
    assert reduced and set(np.flatnonzero(np.diff(steps)) + 1) <= set(rows.tolist())


def test_markers_keep_every_slice() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    ts = np.sort(rng.integers(0, 10**9, n)).astype(np.int64)
    group = rng.integers(0, 3, n)
    w = -rng.integers(1, 10**6, n)
    kept = representatives(ts, w, group, 0, 10**9, limit=1000)
    assert kept.reduced and kept.count.sum() == n and kept.total.sum() == w.sum()
    key = group * MARKER_BUCKETS + ts * MARKER_BUCKETS // 10**9
    assert sorted(key[kept.rows].tolist()) == sorted(set(key.tolist()))
    for r in kept.rows[::50]:
        assert abs(w[r]) == np.abs(w[key == key[r]]).max()
    small = representatives(ts[:10], w[:10], group[:10], 0, 10**9, limit=1000)
    assert not small.reduced and small.rows.tolist() == list(range(10))


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from report_bench import synthesize

    path = str(tmp_path_factory.mktemp("big") / "big.trace")
    synthesize(path, 300_000)
    return path


def test_large_trace_is_reduced_keeping_peaks_and_releases(big_trace, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lane, "MARKER_LIMIT", 40)
    monkeypatch.setattr(addrmap, "RELEASE_LIMIT", 30)
    monkeypatch.setattr(addrmap, "BAR_LIMIT", 25)
    t = open_trace(big_trace)
    tl = build(t)
    built = write_report(t, tmp_path / "big.html")
    page = (tmp_path / "big.html").read_text()
    assert built["reduced"] and "Reduced for drawing" in page and built["memory_points"] < len(tl.memory)
    fig = figure(page)
    by = {tr["meta"]["series"]: tr for tr in traces_of(fig, panel="memory")}
    for col in ("footprint", "live_bytes", "heap", "rss_anon", "anon_mapped"):
        y, full = by[col]["y"], tl.memory[col]
        assert y.max() == full.max() and y.min() == full.min() and y[-1] == full.iloc[-1], col
    # every release: a marker of its call within its slice, and the counts add up
    span = (fig["layout"]["meta"]["duration_s"]) * 1e9
    for call, g in tl.releases.groupby("call"):
        (marks,) = [tr for tr in traces_of(fig, panel="map", what=f"release-{call}")]
        counts = [int(m.group(1).replace(",", "")) if (m := re.search(r"stands for ([\d,]+)", h)) else 1
                  for h in marks["hovertext"]]
        assert sum(counts) == len(g), call
        x = np.sort(marks["x"] * 1e9)
        rel = (g["ts"].to_numpy() - tl.t0).astype(np.float64)
        nearest = np.abs(x[np.clip(np.searchsorted(x, rel), 0, len(x) - 1)] - rel)
        before = np.abs(x[np.clip(np.searchsorted(x, rel) - 1, 0, len(x) - 1)] - rel)
        assert (np.minimum(nearest, before) <= span / MARKER_BUCKETS + 1).all(), call
    lane_calls = [int(m.group(1).replace(",", "")) if (m := re.search(r"stands for ([\d,]+)", h)) else 1
                  for tr in traces_of(fig, panel="lane") for h in tr["hovertext"]]
    assert sum(lane_calls) == built["lane_markers"] or sum(lane_calls) > built["lane_markers"]
    assert "not drawn as bars" in page


def test_compare_side_by_side(tmp_path) -> None:
    names = ["phases", "phases-strace", "phases-attach"]
    built = write_compare([TRACES / f"{n}.trace" for n in names], tmp_path / "cmp.html")
    page = (tmp_path / "cmp.html").read_text()
    assert built["traces"] == ["1: ./phases · glibc (libc.so.6)", "2: ./phases · allocator not traced",
                               "3: ./phases --wait · glibc (libc.so.6)"]
    fig = figure(page)
    assert [a["text"] for a in fig["layout"]["annotations"]][:2] == ["<b>footprint = heap + anon mappings</b>",
                                                                     "<b>RSS anon</b>"]
    foot = [t for t in fig["data"] if t["meta"]["series"] == "footprint"]
    assert len(foot) == 3 and all(t["y"].max() == 600 * 1024 for t in foot)
    assert len([t for t in fig["data"] if t["meta"]["series"] == "live_bytes"]) == 2  # strace: not traced
    for row in ("peak footprint", "final footprint", "peak RSS anon", "given back to the kernel"):
        assert f"<th>{row}</th>" in page
    assert "not traced" in page and "600 KiB" in page
    assert built["figures"][0]["released"]["total"] == built["figures"][1]["released"]["total"]
    stacked = write_compare([TRACES / "phases.trace", TRACES / "forker.trace"], tmp_path / "s.html", stack=True)
    fig = figure((tmp_path / "s.html").read_text())
    assert stacked["traces"][1] == "2: ./forker · glibc (libc.so.6)"
    assert {t["yaxis"] for t in fig["data"]} == {"y", "y2"}
    assert fig["layout"]["yaxis2"]["matches"] == "y"  # one scale for every run
    for t in fig["data"]:
        if "live" in t["meta"]:  # the footprint's hover finds the live bytes of its own run
            live = fig["data"][t["meta"]["live"]]
            assert live["meta"]["series"] == "live_bytes" and live["yaxis"] == t["yaxis"]


def test_figures_use_only_the_bundled_trace_types(tmp_path) -> None:
    """The page inlines plotly.js's basic bundle: a trace type it lacks would not be drawn."""
    from viz.page import PLOTLY, PLOTLY_TRACES, STATIC

    used: set[str] = set()
    for name in ("phases", "forker", "scenario-threads", "scenario-mmap-threshold"):
        write_report(TRACES / f"{name}.trace", tmp_path / "r.html")
        used |= {t["type"] for t in figure((tmp_path / "r.html").read_text())["data"]}
    for stack in (False, True):
        write_compare([TRACES / "phases.trace", TRACES / "forker.trace"], tmp_path / "c.html", stack=stack)
        used |= {t["type"] for t in figure((tmp_path / "c.html").read_text())["data"]}
    assert used == {"scatter", "bar"} and used <= set(PLOTLY_TRACES)
    assert (STATIC / PLOTLY).stat().st_size < 1_300_000
    assert "MIT License" in (STATIC / "plotly-basic.LICENSE").read_text()


def test_commands(tmp_path) -> None:
    assert report_cmd.default_output("a/run.trace") == "a/run.html"
    assert report_cmd.default_output("run") == "run.html"
    src = tmp_path / "run.trace"
    src.write_bytes((TRACES / "phases.trace").read_bytes())
    said: list[str] = []
    built = report_cmd.report(str(src), say=said.append)
    assert Path(built["path"]) == tmp_path / "run.html" and said and said[0].startswith("wrote ")
    found = tmp_path / "f.json"
    found.write_text(json.dumps({"findings": [{"code": "C", "message": "m", "evidence": {}, "ts": None}]}))
    assert report_cmd.report(str(src), str(tmp_path / "f.html"), str(found))["findings"] == 1
    found.write_text("{")
    for bad in (str(found), str(tmp_path / "missing.json")):
        with pytest.raises(HeaplineError) as e:
            report_cmd.report(str(src), str(tmp_path / "f.html"), bad)
        assert e.value.code == Exit.USAGE
    with pytest.raises(HeaplineError) as e:
        report_cmd.report(str(src), str(tmp_path / "no" / "such" / "dir.html"))
    assert e.value.code == Exit.OUTPUT_NOT_WRITABLE
    assert not list((tmp_path).glob(".heapline-*"))
    bad_trace = tmp_path / "bad.trace"
    bad_trace.write_text("not a trace")
    with pytest.raises(HeaplineError) as e:
        report_cmd.report(str(bad_trace))
    assert e.value.code == Exit.BAD_TRACE
    with pytest.raises(HeaplineError) as e:
        compare_cmd.compare([str(src)], str(tmp_path / "c.html"))
    assert e.value.code == Exit.USAGE
    assert compare_cmd.compare([str(src), str(src)], str(tmp_path / "c.html"))["bytes"] > 0
    assert report_cmd.record_html(str(src), str(tmp_path / "r.html"))["events"] == len(open_trace(str(src)).events)


def test_report_of_a_traced_child(tmp_path) -> None:
    """``report --pid``: a child's own figures and findings; the traced process named as not shown."""
    from typer.testing import CliRunner

    from tracer.analysis.explain import explain
    from tracer.cli import app

    src = tmp_path / "fork-exit.trace"
    src.write_bytes((TRACES / "scenario-fork-exit.trace").read_bytes())
    t = open_trace(str(src))
    root = int(t.meta["pid"])
    (child,) = sorted(set(t.columns["pid"].tolist()) - {root})
    r = CliRunner().invoke(app, ["report", str(src), "--pid", str(child)])
    assert r.exit_code == 0, r.output
    out = tmp_path / f"fork-exit.pid-{child}.html"
    page = out.read_text()
    built = report_cmd.report(str(src), str(tmp_path / "c.html"), pid=child)
    tl = build(t, child)
    assert built["pid"] == child and built["figures"]["footprint"]["peak"] == tl.memory["footprint"].max()
    assert built["figures"]["footprint"]["peak"] != build(t).memory["footprint"].max()
    (foot,) = traces_of(figure(page), panel="memory", series="footprint")
    assert foot["y"].max() == tl.memory["footprint"].max()
    own = [f.code for f in explain(t, pid=child)]
    assert built["findings"] == len(own) and [c for ln in built["verdict"] for c in ln["codes"]].count(own[0]) >= 1
    assert f"heapline: pid {child}, a child of <code>./fork-exit</code>" in page
    assert f"Shown: pid {child}. Also traced, not shown: pid {root}." in page
    assert "CHILD_HOLDS_MOST" not in page  # the parent's finding about this child is not the child's
    # a pid the trace has none of: one sentence, its own exit code (explain --pid too), nothing written
    for verb in (["report", str(src), "-o", str(tmp_path / "x.html")], ["explain", str(src)]):
        r = CliRunner().invoke(app, [*verb, "--pid", "999999"])
        assert r.exit_code == Exit.PID_NOT_IN_TRACE == 22, r.output
        assert r.output.count("\n") == 1 and "no events of process 999999" in r.output
    assert not (tmp_path / "x.html").exists()


def test_the_page_explains_its_words(tmp_path) -> None:
    from viz.glossary import GLOSSARY

    out = tmp_path / "phases.html"
    write_report(TRACES / "phases.trace", out)
    page = out.read_text()
    assert "<details id=\"glossary\">" in page
    for word, meaning in GLOSSARY.items():
        assert f"<dt>{html.escape(word)}</dt><dd>{html.escape(meaning, quote=True)}</dd>" in page
    assert page.count("<dfn title=") >= 4  # the key figures' terms
