"""Findings on real recordings and on the committed samples."""

from __future__ import annotations

import json

from helpers import ROOT, needs_root, parse_report, run_heapline, workload

from tracer.analysis.explain import condensed, explain
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
    assert top["break"] == hex(rep.brk("end"))
    # the top is below the heap's own tcache chunk and what is cached (exactness: tests/live/test_accounting.py)
    assert 0 < top["top"] <= rep.brk("end") - rep.brk("start") - 0x290


def test_forked_child_returned_at_exit() -> None:
    t = open_trace(str(TRACES / "forker.trace"))
    rep = parse_report((TRACES / "forker.out").read_text())
    child = int(rep.all("fork")[0]["child"])
    exits = [f for f in explain(t) if f.code == "RETURNED_AT_EXIT" and f.evidence["pid"] == child]
    assert len(exits) == 1 and exits[0].evidence["exit_code"] == 3


def _exit_finding(pid: int, at_s: float) -> dict:
    ev = {"pid": pid, "footprint": 4096, "rss_anon": 8192, "exit_code": 0, "at_s": at_s}
    return {"code": "RETURNED_AT_EXIT", "message": f"Process {pid} ...", "evidence": ev, "ts": int(at_s * 1e9)}


def test_many_exits_read_as_one_finding() -> None:
    other = {"code": "MMAP_CHUNK_RETURNED", "message": "x", "evidence": {}, "ts": 5}
    few = [_exit_finding(11, 0.1), _exit_finding(12, 0.2), other, _exit_finding(13, 0.3), _exit_finding(10, 0.9)]
    assert condensed(few, 10) == few
    many = [_exit_finding(11, 0.1), other, *(_exit_finding(p, p / 100) for p in (12, 13, 14)), _exit_finding(10, 0.9)]
    out = condensed(many, 10)
    assert [f["code"] for f in out] == ["RETURNED_AT_EXIT", "MMAP_CHUNK_RETURNED", "RETURNED_AT_EXIT"]
    assert out[0]["evidence"] == {"pids": [11, 12, 13, 14], "footprint": 4 * 4096, "rss_anon": 4 * 8192}
    assert out[0]["ts"] == many[0]["ts"]
    assert out[0]["message"].startswith("4 other processes gave back 16 KiB") and "from 0.100 s to 0.140 s" in out[0][
        "message"]
    assert out[2] is many[-1]  # the traced process keeps its own


@needs_root
def test_a_shells_helpers_are_one_line_of_the_summary(tmp_path) -> None:
    trace = str(tmp_path / "sh.trace")
    r = run_heapline("record", "-q", "-o", trace, "--", "/bin/sh", "-c", "for i in 1 2 3 4 5 6; do /bin/true; done")
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    children = {f.evidence["pid"] for f in explain(t) if f.code == "RETURNED_AT_EXIT"} - {t.header["pid"]}
    assert len(children) >= 6  # each /bin/true, one finding each in the JSON
    text = run_heapline("summary", trace).stdout
    assert f"{len(children)} other processes gave back" in " ".join(text.split())
    assert "RETURNED_AT_EXIT: Process" in text  # the shell's own exit, as it was
    assert text.count("RETURNED_AT_EXIT") == 2


def test_explain_at_a_moment() -> None:
    t = open_trace(str(TRACES / "phases.trace"))
    early = explain(t, at_ns=1)
    assert "RETURNED_AT_EXIT" not in codes(early)
    r = run_heapline("explain", str(TRACES / "phases.trace"), "--json")
    assert r.returncode == 0 and "RETURNED_AT_EXIT" in [f["code"] for f in json.loads(r.stdout)["findings"]]


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


def test_the_live_series_is_computed_once_per_process(monkeypatch) -> None:
    """The summary, the model and several findings all need the traced process's live blocks."""
    import tracer.analysis.allocmodel as am
    from tracer.analysis.model import build
    from tracer.analysis.summary import summarize

    sizes: list[int] = []
    real = am.live_series
    monkeypatch.setattr(am, "live_series",
                        lambda ev, start=None, paired=None: sizes.append(len(ev)) or real(ev, start, paired))
    t = open_trace(str(TRACES / "phases.trace"))
    s = summarize(t)
    explain(t)
    build(t)
    assert len(sizes) == 1 and s["alloc"]["live_blocks_final"] == am.process_live(t, t.header["pid"]).blocks_final


def test_pinned_when_freeing_the_highest_block_would_trim() -> None:
    """TLPI 7.1: blocks 1..999 of 1,000 freed, the 1,000th live at the top: the break stays (the
    program printed it), and freeing that block would let free() trim all but M_TOP_PAD."""
    t = open_trace(str(TRACES / "scenario-free-and-sbrk-1000-10240-1-1-999.trace"))
    rep = parse_report((TRACES / "scenario-free-and-sbrk-1000-10240-1-1-999.out").read_text())
    assert rep.brk("free") == rep.brk("alloc")
    (pin,) = [f for f in explain(t) if f.code == "BRK_PINNED_BY_LIVE_CHUNK"]
    assert pin.evidence["block"]["size"] == 10240
    # what free() would release: the break down to the block's start plus M_TOP_PAD, in whole pages
    heap = pin.evidence["heap"]
    assert pin.evidence["release_if_freed"] > 0.95 * (rep.brk("free") - rep.brk("start") - (128 << 10))
    assert heap["size"] == rep.brk("free") - rep.brk("start")


def test_not_pinned_by_a_block_above_fragmented_free_memory() -> None:
    """20,000 tiny blocks freed and allocated again: the highest live one has no big free run under it."""
    t = open_trace(str(TRACES / "scenario-reuse-20000.trace"))
    assert "BRK_PINNED_BY_LIVE_CHUNK" not in codes(explain(t))


def test_no_reuse_claimed_for_a_block_grown_by_mremap() -> None:
    t = open_trace(str(TRACES / "scenario-realloc-grow.trace"))
    assert "REUSED_NOT_GROWN" not in codes(explain(t))


def test_no_threshold_rise_claimed_after_freeing_a_chunk_over_32_mib() -> None:
    t = open_trace(str(TRACES / "scenario-realloc-grow.trace"))  # the 64 MiB block is freed from mmap
    (mm,) = [f for f in explain(t) if f.code == "MMAP_CHUNK_RETURNED"]
    th = mm.evidence["thresholds_after"]
    assert (th["mmap"], th["trim"], th["dynamic"]) == (128 << 10, 128 << 10, True)
    assert "raised_at_s" not in mm.evidence and "did not rise" in mm.message
