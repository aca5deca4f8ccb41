"""Findings on real recordings and on the committed samples."""

from __future__ import annotations

import json

from conftest import ROOT, needs_root, parse_report, run_heapline, workload

from tracer.explain import explain
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def test_samples_returned_at_exit_and_top_pad() -> None:
    t = open_trace(str(TRACES / "phases.trace"))
    found = {f.code: f for f in explain(t)}
    assert set(found) >= {"RETURNED_AT_EXIT", "TOP_BELOW_TRIM_THRESHOLD"}
    rep = parse_report((TRACES / "phases.out").read_text())
    top = found["TOP_BELOW_TRIM_THRESHOLD"].evidence
    assert top["break"] == hex(rep.brk("end")) and top["free_at_top"] == rep.brk("end") - rep.brk("start")


def test_forked_child_returned_at_exit() -> None:
    t = open_trace(str(TRACES / "forker.trace"))
    rep = parse_report((TRACES / "forker.out").read_text())
    child = int(rep.all("fork")[0]["child"])
    exits = [f for f in explain(t) if f.code == "RETURNED_AT_EXIT" and f.evidence["pid"] == child]
    assert len(exits) == 1 and exits[0].evidence["exit_code"] == 3


def test_explain_at_a_moment() -> None:
    t = open_trace(str(TRACES / "phases.trace"))
    early = explain(t, at_ns=1)
    assert "RETURNED_AT_EXIT" not in codes(early)
    r = run_heapline("explain", str(TRACES / "phases.trace"), "--json")
    assert r.returncode == 0 and "RETURNED_AT_EXIT" in [f["code"] for f in json.loads(r.stdout)]


@needs_root
def test_trim_and_arenas_on_a_live_recording(tmp_path) -> None:
    trace = str(tmp_path / "t.trace")
    r = run_heapline("record", "-q", "-o", trace, "--", workload("alloc_calls"), "--threads", "3")
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    found = explain(t)
    (trim,) = [f for f in found if f.code == "RELEASED_BY_TRIM"]
    assert trim.evidence["released_bytes"] > 0 and trim.ts is not None
    assert sum(trim.evidence["by_call"].values()) == trim.evidence["released_bytes"]
    assert "ARENA_RETAINED" in codes(found)
    s = json.loads(run_heapline("summary", trace, "--json").stdout)
    assert {"RELEASED_BY_TRIM", "ARENA_RETAINED", "RETURNED_AT_EXIT"} <= {f["code"] for f in s["findings"]}
