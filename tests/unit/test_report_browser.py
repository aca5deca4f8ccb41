"""The HTML report in a real headless Chromium: it draws without errors, hovers say the right thing,
findings move the time axis, the page follows the colour scheme, and nothing from the target runs.

Skipped when Chromium is not installed (``apt-get install chromium``). A screenshot of the phases
report is saved in the test's tmp dir; ``HEAPLINE_UPDATE_DOCS=1`` (or a missing file) also writes
it to docs/report.png for the README.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from browser import Browser, Page, chromium_path
from helpers import ROOT, needs_root, num, parse_report, run_heapline, workload
from test_report import CLOSER, HOSTILE, HOSTILE_FINDINGS, hostile_trace

from tracer.analysis.model import build
from tracer.commands import report as report_cmd
from tracer.tracefile import open_trace
from tracer.units import human_bytes
from viz.compare import write_compare
from viz.page import PLOTLY_TRACES
from viz.report import write_report

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="Chromium is not installed (apt-get install chromium): no browser to render in")

TRACES = ROOT / "traces"
FIG = "window.__heapline.figures[0]"
# viewport coordinates of point j of trace i (the page is scrolled to show it first)
POINT = """((i, j) => {
  const gd = window.__heapline.figures[0], t = gd.data[i], fl = gd._fullLayout;
  const xa = fl['xaxis' + t.xaxis.slice(1)], ya = fl['yaxis' + t.yaxis.slice(1)];
  const x = t.type === 'bar' && t.base ? t.base[j] + t.x[j] / 2 : t.x[j];
  const at = () => { const r = gd.getBoundingClientRect();
    const y = t.type === 'bar' && !t.base ? t.y[j] / 2 : t.y[j];  // a bar from 0: its middle
    return {x: r.left + xa._offset + xa.l2p(x), y: r.top + ya._offset + ya.l2p(y)}; };
  let p = at();
  window.scrollBy(0, p.y - window.innerHeight / 2);
  return at();
})"""
SUBPLOTS = ["xy", "x2y2", "x3y3", "x4y4", "x5y5"]  # memory, calls, address space, resident by cause, activity
HOVER = "Array.from(document.querySelectorAll('.hoverlayer .hovertext')).map(e => e.textContent).join('\\n')"


@pytest.fixture(scope="module")
def browser():
    with Browser(width=1400, height=1000) as b:
        yield b


@pytest.fixture(scope="module")
def phases_html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "phases.html"
    report_cmd.report(str(TRACES / "phases.trace"), str(out))  # with the findings tracer.analysis.explain gives
    return out


def render(browser: Browser, path: Path) -> Page:
    page = browser.open(str(path))
    page.wait_rendered()
    browser.pump(0.3)
    return page


def indices(page: Page, **meta: str) -> list[int]:
    cond = " && ".join(f"(t.meta || {{}})[{k!r}] === {v!r}" for k, v in meta.items())
    return page.eval(f"{FIG}.data.map((t, i) => ({cond}) ? i : -1).filter(i => i >= 0)")


def hover(page: Page, i: int, j: int) -> str:
    """The hover text of point j of trace i, zoomed in around it first so that it is the closest point."""
    page.eval(f"(() => {{ const t = {FIG}.data[{i}];"
              f" const x = t.type === 'bar' && t.base ? t.base[{j}] + t.x[{j}] / 2 : t.x[{j}];"
              f" return Plotly.relayout({FIG}, {{'xaxis.range': [x - 2e-6, x + 2e-6]}}).then(() => 0); }})()")
    p = page.eval(f"{POINT}({i}, {j})")
    page.mouse(p["x"] + 40, p["y"] + 40)  # away first, so the hover really changes
    page.b.pump(0.05)
    page.mouse(p["x"], p["y"])
    page.wait_for(f"({HOVER}).length > 0", timeout=5)
    return page.eval(HOVER)


def test_report_renders_its_panels(browser, phases_html, tmp_path) -> None:
    page = render(browser, phases_html)
    try:
        assert page.problems() == []
        # the inlined partial bundle registers exactly the trace types viz.page lists
        assert sorted(page.eval("Object.keys(Plotly.PlotSchema.get().traces)")) == sorted(PLOTLY_TRACES)
        assert page.eval(f"{FIG}._fullLayout._subplots.cartesian") == SUBPLOTS
        series = page.eval(f"{FIG}.data.filter(t => t.meta.panel === 'memory').map(t => t.meta.series)")
        assert series == ["heap", "anon_mapped", "rss_anon", "live_bytes", "retained", "footprint"]
        kinds = set(page.eval(f"{FIG}.data.filter(t => t.meta.panel === 'lane').map(t => t.meta.kind)"))
        assert {"brk", "mmap", "munmap", "mremap", "madvise", "mprotect"} <= kinds
        what = set(page.eval(f"{FIG}.data.filter(t => t.meta.panel === 'map').map(t => t.meta.what)"))
        assert {"heap", "anon", "file", "release-brk", "release-munmap", "release-madvise"} <= what
        # drawn: lines, markers and bars are in the SVG
        assert page.eval("document.querySelectorAll('.xy .scatterlayer .trace path.js-line').length") >= 5
        assert page.eval("document.querySelectorAll('.x2y2 .scatterlayer .point').length") > 100
        assert page.eval("document.querySelectorAll('.x3y3 .barlayer .point').length") > 5
        # axes in human units, all three panels on one time axis
        assert all(t.endswith(" ms") for t in page.eval(f"{FIG}._fullLayout.xaxis.ticktext"))
        assert all(t.endswith(("KiB", " B")) for t in page.eval(f"{FIG}._fullLayout.yaxis.ticktext"))
        ranges = page.eval(f"['xaxis', 'xaxis2', 'xaxis3', 'xaxis4', 'xaxis5'].map(a => {FIG}._fullLayout[a].range)")
        assert all(r == ranges[0] for r in ranges)
        layers = page.eval(f"{FIG}.data.filter(t => t.meta.panel === 'accounting').map(t => t.meta.series)")
        assert layers[0] == "live" and layers[-1] == "address space"
        assert page.eval("document.querySelectorAll('.x4y4 .scatterlayer .trace path.js-fill').length") >= 2
        assert page.eval("document.querySelectorAll('.x5y5 .barlayer .point').length") > 10
        assert page.eval("document.querySelectorAll('#findings .finding').length") >= 1
        page.eval("window.scrollTo(0, 0)")
        page.screenshot(tmp_path / "report.png")
        docs = ROOT / "docs" / "report.png"
        if os.environ.get("HEAPLINE_UPDATE_DOCS") == "1" or not docs.exists():
            shutil.copyfile(tmp_path / "report.png", docs)
        assert (tmp_path / "report.png").stat().st_size > 50_000
    finally:
        page.close()


def test_activity_lane_of_a_churn_shows_its_rates(browser, tmp_path) -> None:
    """tiny-mallocs: 20,000 malloc(4) then 20,000 frees (as the workload was run), and one
    malloc_trim(0) that returned 1 (as it printed)."""
    out = tmp_path / "tiny.html"
    report_cmd.report(str(TRACES / "scenario-tiny-mallocs-20000.trace"), str(out))
    rep = parse_report((TRACES / "scenario-tiny-mallocs-20000.out").read_text())
    page = render(browser, out)
    try:
        assert page.problems() == []
        (alloc,) = indices(page, panel="activity", series="allocated")
        (freed,) = indices(page, panel="activity", series="freed")
        counts = {}
        for i, sign in ((alloc, 1), (freed, -1)):
            ys = page.eval(f"Array.from({FIG}.data[{i}].y)")
            assert all(y * sign > 0 for y in ys)  # every slice drawn had calls
            j = max(range(len(ys)), key=lambda k: abs(ys[k]))
            text = hover(page, i, j)
            rate = int(re.search(r"([\d,]+) calls/s", text).group(1).replace(",", ""))
            assert rate > 0 and "blocks" in text
            n = page.eval(f"{FIG}.data[{i}].hovertext.map(h => +h.split('{'allocated' if sign > 0 else 'freed'}: ')[1]"
                          ".split(' blocks')[0].replace(/,/g, '')).reduce((a, b) => a + b, 0)")
            counts[sign] = n
        assert counts[1] == counts[-1] == 20_000
        (trim,) = indices(page, panel="activity", series="malloc_trim")
        (line,) = rep.all("malloc_trim")
        assert f"malloc_trim({line['pad']})" in hover(page, trim, 0)
        assert f"returned {line['ret']}" in hover(page, trim, 0)
    finally:
        page.close()


def test_madvise_hover_shows_the_call(browser, phases_html) -> None:
    rep = parse_report((TRACES / "phases.out").read_text())
    advice = {4: "MADV_DONTNEED", 8: "MADV_FREE"}
    page = render(browser, phases_html)
    try:
        (i,) = [k for k in indices(page, panel="lane", kind="madvise")]
        n = page.eval(f"{FIG}.data[{i}].x.length")
        texts = [hover(page, i, j) for j in range(n)]
        for kv in rep.all("madvise"):
            call = f"madvise({num(kv['addr']):#x}, {kv['len']}, {advice[int(kv['advice'])]}) = 0"
            (hit,) = [t for t in texts if call in t]
            assert f"gave back {human_bytes(int(kv['len']))} ({int(kv['len']):,} bytes)" in hit
            assert "took " in hit and "break after: 0x" in hit
        # the same release on the address map, with its range
        (m,) = indices(page, panel="map", what="release-madvise")
        first = rep.all("madvise")[0]
        text = hover(page, m, 0)
        assert f"{num(first['addr']):#x}–{num(first['addr']) + int(first['len']):#x}" in text
        assert page.problems() == []
    finally:
        page.close()


def test_memory_hover_in_binary_units(browser, phases_html) -> None:
    tl = build(open_trace(str(TRACES / "phases.trace")))
    page = render(browser, phases_html)
    try:
        (i,) = indices(page, panel="memory", series="footprint")
        j = page.eval(f"(() => {{ const y = {FIG}.data[{i}].y; return y.indexOf(Math.max(...y)); }})()")
        text = hover(page, i, j)
        peak = human_bytes(tl.memory["footprint"].max())
        assert f"footprint = heap + anon mappings: {peak}" in text and "retained (footprint − live)" in text
        assert " ms" in text
    finally:
        page.close()


def test_the_page_writes_bytes_by_the_rule_of_every_output(browser, phases_html) -> None:
    values = [0, 1, 208, 1023, 1024, 1536, 4096, 10000, 10239, 10240, 401600, 1048063, 1048575, 1093632,
              32 << 20, 2105344, 1023 << 20, (1 << 30) + 1, 5 << 40, 1 << 52, -5000]
    page = render(browser, phases_html)
    try:
        got = page.eval(f"{values!r}.map(window.__heapline.hb)")
        assert got == [human_bytes(v) for v in values]
    finally:
        page.close()


def test_finding_moves_the_time_axis(browser, phases_html) -> None:
    page = render(browser, phases_html)
    try:
        box = page.eval("(() => { const b = document.querySelector('[data-goto]'); b.scrollIntoView();"
                        " const r = b.getBoundingClientRect(); return {x: r.left + r.width / 2,"
                        " y: r.top + r.height / 2, t: +b.dataset.goto}; })()")
        page.click(box["x"], box["y"])
        page.wait_for("document.querySelector('.finding.active') !== null", timeout=5)
        page.b.pump(0.5)
        lo, hi = page.eval(f"{FIG}._fullLayout.xaxis.range")
        assert lo < box["t"] < hi and abs((lo + hi) / 2 - box["t"]) < 1e-6
        assert page.eval(f"{FIG}._fullLayout.xaxis3.range") == [lo, hi]
        # zoomed in this far, the ticks are in microseconds
        page.eval(f"Plotly.relayout({FIG}, {{'xaxis.range': [{box['t']}, {box['t'] + 2e-5}]}}).then(() => 0)")
        page.b.pump(0.5)
        assert all(t.endswith(" µs") or t.endswith(" ms") for t in page.eval(f"{FIG}._fullLayout.xaxis.ticktext"))
        assert page.problems() == []
    finally:
        page.close()


def test_follows_the_dark_colour_scheme(browser, phases_html, tmp_path) -> None:
    page = render(browser, phases_html)
    try:
        light = page.eval(f"{FIG}._fullLayout.font.color")
        page.emulate_dark(True)
        page.wait_for(f"{FIG}._fullLayout.font.color !== {light!r}", timeout=5)
        assert page.eval("getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"
        assert page.eval(f"{FIG}._fullLayout.font.color") == "#e6edf3"
        page.screenshot(tmp_path / "report-dark.png")
        page.emulate_dark(False)
        page.wait_for(f"{FIG}._fullLayout.font.color === {light!r}", timeout=5)
        assert page.problems() == []
    finally:
        page.close()


def _no_script_ran(browser: Browser, html: Path) -> Page:
    page = render(browser, html)
    browser.pump(1.0)
    assert page.dialogs() == [] and page.problems() == []
    assert page.eval("document.querySelectorAll('img').length") == 0
    assert page.eval("window.__heapline.figures.length") == 1  # and the report still drew
    return page


def test_hostile_trace_runs_no_script(browser, tmp_path) -> None:
    write_report(hostile_trace(), tmp_path / "hostile.html", HOSTILE_FINDINGS)
    page = _no_script_ran(browser, tmp_path / "hostile.html")
    try:
        assert HOSTILE in page.eval("document.title")
        assert page.eval("document.querySelector('h1 code').textContent").startswith(f"'/tmp/{HOSTILE}'")
        assert CLOSER in page.eval("document.querySelector('#findings .msg').textContent")
    finally:
        page.close()


def test_compare_page_with_hostile_labels(browser, tmp_path) -> None:
    write_compare([hostile_trace(), open_trace(str(TRACES / "phases.trace"))], tmp_path / "cmp.html")
    page = _no_script_ran(browser, tmp_path / "cmp.html")
    try:
        legend = page.eval("Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent)")
        assert any(HOSTILE in t for t in legend)
        assert page.eval(f"{FIG}._fullLayout._subplots.cartesian.length") == 4
        for axis in ("yaxis", "yaxis2", "yaxis3", "yaxis4"):
            assert all(t.endswith(("KiB", " B")) for t in page.eval(f"{FIG}._fullLayout.{axis}.ticktext")), axis
        (i,) = [k for k in indices(page, series="footprint") if "onerror" in page.eval(f"{FIG}.data[{k}].name")]
        page.eval(f"Plotly.restyle({FIG}, {{visible: {FIG}.data.map((t, k) => k === {i})}}).then(() => 0)")
        assert HOSTILE in hover(page, i, 1) and page.dialogs() == []
    finally:
        page.close()


@needs_root
def test_program_named_like_html_records_and_reports_safely(browser, tmp_path) -> None:
    prog = tmp_path / HOSTILE
    shutil.copyfile(workload("phases"), prog)
    prog.chmod(0o755)
    trace = tmp_path / "x.trace"
    r = run_heapline("record", "-q", "-o", str(trace), "--", str(prog), CLOSER)
    assert r.returncode == 0, r.stderr
    report_cmd.report(str(trace), str(tmp_path / "x.html"))
    page = _no_script_ran(browser, tmp_path / "x.html")
    try:
        assert page.eval("document.querySelector('h1 code').textContent") == f"'{prog}' '{CLOSER}'"
        assert HOSTILE in page.eval("document.title")
    finally:
        page.close()


def test_large_trace_renders_reduced(browser, tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from report_bench import synthesize

    trace = str(tmp_path / "big.trace")
    synthesize(trace, 300_000)
    tl = build(open_trace(trace))
    built = write_report(trace, tmp_path / "big.html")
    assert built["reduced"]
    page = render(browser, tmp_path / "big.html")
    try:
        assert page.problems() == []
        assert page.eval("document.querySelector('#reduced') !== null")
        (i,) = indices(page, panel="memory", series="footprint")
        assert page.eval(f"Math.max(...{FIG}.data[{i}].y)") == tl.memory["footprint"].max()
        (i,) = indices(page, panel="memory", series="live_bytes")
        assert page.eval(f"Math.max(...{FIG}.data[{i}].y)") == tl.memory["live_bytes"].max()
    finally:
        page.close()


FIRST_SCREEN = (1280, 800)
#: the scenarios' samples and what each is about (workloads/scenarios/README.md): the codes the verdict's
#: first line rests on, and words it says
DOMINANT = {
    "scenario-tiny-mallocs-20000": (["GIVEN_BACK_WHILE_RUNNING", "RELEASED_BY_TRIM", "RETURNED_AT_EXIT"],
                                    "inside malloc_trim at 0.401 s"),
    "scenario-tiny-mallocs-20000-pin": (["GIVEN_BACK_WHILE_RUNNING", "RELEASED_BY_TRIM", "RETURNED_AT_EXIT"],
                                        "inside malloc_trim at 0.438 s"),
    "scenario-free-and-sbrk-1000-10240-2": (["MEMORY_KEPT_AFTER_FREE"], "in free chunks between live blocks"),
    "scenario-free-and-sbrk-1000-10240-1-500-1000": (["MEMORY_KEPT_AFTER_FREE"], "free from 0.169 s gave back"),
    "scenario-free-and-sbrk-1000-10240-1-1-999": (["MEMORY_KEPT_AFTER_FREE", "BRK_PINNED_BY_LIVE_CHUNK"],
                                                  "pins the break"),
    "scenario-threads": (["MEMORY_KEPT_AFTER_FREE", "ARENA_RETAINED"], "in thread-arena heaps"),
    "scenario-allocators": (["MEMORY_KEPT_AFTER_FREE", "FREED_NOT_CONSOLIDATED"], "not merged into free space"),
    "scenario-allocators-jemalloc": (["MEMORY_KEPT_AFTER_FREE"], "in jemalloc's regions"),
}
VERDICT = """Array.from(document.querySelectorAll('#verdict .v')).map(e => { const r = e.getBoundingClientRect();
  return {cls: e.className, codes: e.dataset.codes.split(' '), text: e.querySelector('.vline').textContent,
          bottom: r.bottom, span: e.querySelector('.vline').dataset.span.split(',').map(Number),
          size: parseFloat(getComputedStyle(e).fontSize), weight: +getComputedStyle(e).fontWeight,
          border: getComputedStyle(e).borderLeftColor}; })"""


@pytest.fixture(scope="module")
def small_screen():
    with Browser(width=FIRST_SCREEN[0], height=FIRST_SCREEN[1]) as b:
        yield b


@pytest.mark.parametrize("name", list(DOMINANT))
def test_verdict_first_line_is_on_the_first_screen(small_screen, name, tmp_path) -> None:
    out = tmp_path / f"{name}.html"
    built = report_cmd.report(str(TRACES / f"{name}.trace"), str(out))
    page = render(small_screen, out)
    try:
        assert page.problems() == []
        lines = page.eval(VERDICT)
        assert len(lines) == len(built["verdict"]) and lines[0]["text"] == built["verdict"][0]["text"]
        codes, words = DOMINANT[name]
        first = lines[0]
        assert first["codes"] == codes and words in first["text"] and "major" in first["cls"]
        assert page.eval("window.scrollY") == 0 and first["bottom"] <= FIRST_SCREEN[1]
        # weighted: a minor line (the top of the heap glibc keeps) is smaller, lighter and not red
        for ln in lines[1:]:
            if "minor" in ln["cls"]:
                assert ln["size"] < first["size"] and ln["weight"] < first["weight"]
                if "kept" in first["cls"]:
                    assert ln["border"] != first["border"]
        # the details of the recording are folded
        assert page.eval("document.querySelector('details#recording').open") is False
        page.screenshot(tmp_path / f"{name}.png", full_page=False)
        assert (tmp_path / f"{name}.png").stat().st_size > 20_000
        if name == "scenario-allocators":
            docs = ROOT / "docs" / "first-screen.png"
            if os.environ.get("HEAPLINE_UPDATE_DOCS") == "1" or not docs.exists():
                shutil.copyfile(tmp_path / f"{name}.png", docs)
        # clicking the line zooms every panel to its span
        a, b = first["span"]
        box = page.eval("(() => { const r = document.querySelector('#verdict .vline').getBoundingClientRect();"
                        " return {x: r.left + 20, y: r.top + r.height / 2}; })()")
        page.click(box["x"], box["y"])
        page.wait_for("document.querySelector('#verdict .v.active') !== null", timeout=5)
        page.b.pump(0.5)
        lo, hi = page.eval(f"{FIG}._fullLayout.xaxis.range")
        assert lo <= a and b <= hi and hi - lo <= (b - a) * 1.3 + 1e-4
        assert page.eval(f"{FIG}._fullLayout.xaxis3.range") == [lo, hi]
        assert page.problems() == []
    finally:
        page.close()


def test_child_report_draws(small_screen, tmp_path) -> None:
    t = open_trace(str(TRACES / "scenario-fork-exit.trace"))
    (child,) = sorted(set(t.columns["pid"].tolist()) - {int(t.meta["pid"])})
    built = report_cmd.report(str(TRACES / "scenario-fork-exit.trace"), str(tmp_path / "child.html"), pid=child)
    page = render(small_screen, tmp_path / "child.html")
    try:
        assert page.problems() == []
        assert page.eval(f"{FIG}._fullLayout._subplots.cartesian") == SUBPLOTS
        first = page.eval(VERDICT)[0]
        assert first["text"] == built["verdict"][0]["text"] and first["bottom"] <= FIRST_SCREEN[1]
        assert str(child) in page.eval("document.querySelector('h1').textContent")
    finally:
        page.close()


def test_process_selector_opens_a_childs_own_page(browser, tmp_path) -> None:
    """fork-exit: the traced process's page lists its child; choosing it opens the child's page, whose
    figures are the child's own timeline (its footprint peak, not the parent's)."""
    t = open_trace(str(TRACES / "scenario-fork-exit.trace"))
    root = int(t.meta["pid"])
    (child,) = sorted(set(t.columns["pid"].tolist()) - {root})
    out = tmp_path / "fork-exit.html"
    built = report_cmd.report(str(TRACES / "scenario-fork-exit.trace"), str(out))
    assert [p["pid"] for p in built["pages"]] == [root, child]
    page = render(browser, out)
    try:
        options = page.eval("Array.from(document.querySelectorAll('#hl-proc option')).map(o => o.textContent)")
        assert len(options) == 2 and options[0].startswith(f"pid {root} fork-exit, traced")
        assert options[1].startswith(f"pid {child} fork-exit")
        page.eval(f"(() => {{ const s = document.getElementById('hl-proc'); s.value = 'fork-exit.pid-{child}.html';"
                  " s.dispatchEvent(new Event('change')); return 1; })()")
        page.wait_for(f"document.querySelector('h1') && document.querySelector('h1').textContent.includes("
                      f"'pid {child}') && window.__heapline && window.__heapline.rendered")
        peak = page.eval(f"Math.max(...{FIG}.data.find(t => t.meta.series === 'footprint').y)")
        assert peak == build(t, child).memory["footprint"].max() != build(t).memory["footprint"].max()
        assert page.eval("document.querySelector('#hl-proc option:checked').dataset.pid") == str(child)
        assert page.problems() == []
    finally:
        page.close()
