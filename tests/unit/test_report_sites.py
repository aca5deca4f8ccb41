"""The report's "who holds it" tables, against what the sites workload printed of each site."""

from __future__ import annotations

import re

from helpers import ROOT, parse_report

from tracer.analysis.model import build
from tracer.tracefile import open_trace
from viz.report import write_report

TRACES = ROOT / "traces"
ROW = re.compile(r'<tr data-stack="(\d+)" data-site="([^"]*)" data-live="(\d+)" data-retained="(\d+)" '
                 r'data-allocs="(\d+)">')


def _tables(text: str) -> list[str]:
    return re.findall(r'<table class="sites".*?</table>', text, re.S)


def test_each_site_holds_what_the_program_says(tmp_path) -> None:
    out = tmp_path / "sites.html"
    built = write_report(TRACES / "sites.trace", out)
    assert "who holds it" in built["panels"]
    text = out.read_text()
    end = _tables(text)[0]  # the first: at the end
    rows = {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in ROW.findall(end)}
    truth = parse_report((TRACES / "sites.out").read_text()).all("site")
    assert {s["name"] for s in truth} <= set(rows)
    for s in truth:
        assert rows[s["name"]] == (int(s["live_bytes"]), int(s["freed_chunks"]), int(s["allocs"])), s["name"]
    # the largest holder first: the spill's freed chunks, kept below the pinning block
    assert ROW.search(end)[2] == "spill_site"
    total = re.search(r'<tr class="total"><th>all sites</th><td data-bytes="(\d+)"', end)
    tl = build(open_trace(str(TRACES / "sites.trace")))
    assert int(total[1]) == int(tl.memory["live_bytes"].iloc[-1])
    assert "spill_site (sites) ← main (sites)" in end


def test_no_table_without_stacks(tmp_path) -> None:
    out = tmp_path / "phases.html"
    built = write_report(TRACES / "phases.trace", out)
    assert "who holds it" not in built["panels"] and built["sites"] == []
    assert 'id="sites"' not in out.read_text()
