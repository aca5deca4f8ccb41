"""The verdict (tracer.analysis.verdict) of the committed samples' findings: every finding told once, the
memory that stayed first and largest first, small notes minor, spans from the findings' own evidence."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT

from tracer.analysis.finding import kib
from tracer.analysis.model import build
from tracer.analysis.verdict import MAJOR_MIN, verdict
from tracer.tracefile import open_trace
from viz.figures import span_of

TRACES = ROOT / "traces"
GOLDEN = ROOT / "tests" / "data" / "golden"
SAMPLES = sorted(p.stem for p in TRACES.glob("*.trace"))


def lines_of(name: str):
    t = open_trace(str(TRACES / f"{name}.trace"))
    tl = build(t)
    t0, end = span_of(t, tl)
    found = [{**f, "number": i + 1}
             for i, f in enumerate(json.loads((GOLDEN / f"{name}.explain.json").read_text())["findings"])]
    return verdict(found, tl.pid, t0, end), found, t0, end


@pytest.mark.parametrize("name", SAMPLES)
def test_every_finding_is_told_once(name: str) -> None:
    lines, found, t0, end = lines_of(name)
    told = [n for ln in lines for n in ln.findings]
    assert sorted(told) == [f["number"] for f in found]
    for ln in lines:
        assert t0 <= ln.start < ln.end <= end and ln.text.endswith(".")
        assert [found[n - 1]["code"] for n in ln.findings] == ln.codes
    major = [ln for ln in lines if ln.weight == "major"]
    assert major and lines[: len(major)] == major  # the story first
    kept = [ln.bytes for ln in major if ln.kind == "kept"]
    assert kept == sorted(kept, reverse=True) and all(b >= MAJOR_MIN for b in kept)


@pytest.mark.parametrize("name", SAMPLES)
def test_phases_are_lines_with_their_span(name: str) -> None:
    lines, found, t0, _ = lines_of(name)
    for f in found:
        if f["code"] != "MEMORY_KEPT_AFTER_FREE":
            continue
        (ln,) = [ln for ln in lines if f["number"] in ln.findings]
        ev = f["evidence"]
        assert ln.kind == "kept" and ln.bytes == ev["kept"] and ln.text.startswith(f"{kib(ev['kept'])} kept ")
        assert ln.start == t0 + int(ev["from_s"] * 1e9) and ln.end >= t0 + int(ev["to_s"] * 1e9)


def test_the_top_of_the_heap_is_a_note_beside_the_story() -> None:
    for name in ("scenario-free-and-sbrk-1000-10240-2", "scenario-threads", "scenario-allocators", "phases"):
        lines, _, _, _ = lines_of(name)
        (top,) = [ln for ln in lines if ln.codes == ["TOP_BELOW_TRIM_THRESHOLD"]]
        assert top.weight == "minor" and top.bytes < MAJOR_MIN and lines[0] is not top


def test_the_dominant_line_of_each_scenario() -> None:
    """What each scenario is about (workloads/scenarios/README.md) is the verdict's first line."""
    first = {name: lines_of(name)[0][0] for name in (
        "scenario-tiny-mallocs-20000", "scenario-free-and-sbrk-1000-10240-2",
        "scenario-free-and-sbrk-1000-10240-1-1-999", "scenario-threads", "scenario-allocators")}
    assert first["scenario-tiny-mallocs-20000"].kind == "end"
    assert "RELEASED_BY_TRIM" in first["scenario-tiny-mallocs-20000"].codes
    assert "inside malloc_trim at 0.401 s" in first["scenario-tiny-mallocs-20000"].text
    assert first["scenario-free-and-sbrk-1000-10240-2"].codes == ["MEMORY_KEPT_AFTER_FREE"]
    assert "in free chunks between live blocks" in first["scenario-free-and-sbrk-1000-10240-2"].text
    assert first["scenario-free-and-sbrk-1000-10240-1-1-999"].codes == ["MEMORY_KEPT_AFTER_FREE",
                                                                       "BRK_PINNED_BY_LIVE_CHUNK"]
    assert first["scenario-threads"].codes == ["MEMORY_KEPT_AFTER_FREE", "ARENA_RETAINED"]
    assert first["scenario-allocators"].codes == ["MEMORY_KEPT_AFTER_FREE", "FREED_NOT_CONSOLIDATED"]


def test_findings_of_unknown_codes_are_notes() -> None:
    found = [{"number": 1, "code": "MINE", "message": "something", "evidence": {}, "ts": None},
             {"number": 2, "code": "MEMORY_KEPT_AFTER_FREE", "message": "m", "ts": 1_500,
              "evidence": {"from_s": 1e-6, "to_s": 2e-6, "kept": 2 << 20, "parts": {"tcache": 2 << 20},
                           "ended": "malloc_trim from 0.000 s gave back 2 MiB (brk)"}}]
    lines = verdict(found, 7, 1_000, 10_000)
    assert [ln.kind for ln in lines] == ["kept", "note"] and lines[1].text == "something"
    assert lines[0].text == ("2 MiB kept 0.000001–0.000002 s: 2 MiB in tcache; malloc_trim from 0.000 s "
                             "gave back 2 MiB (brk).")
    assert (lines[0].start, lines[0].end) == (2_000, 3_000)
