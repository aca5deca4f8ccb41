"""The committed sample traces replay, without root, to what their workloads printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checks import check_phases
from helpers import ROOT, parse_report, run_heapline

from tracer.events import Kind
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"


def out_of(name: str) -> str:
    return (TRACES / f"{name}.out").read_text()


@pytest.mark.parametrize("name,attached", [("phases", False), ("phases-strace", False), ("phases-attach", True)])
def test_phases_samples_replay(name: str, attached: bool) -> None:
    check_phases(str(TRACES / f"{name}.trace"), out_of(name), attached=attached)


def test_forker_sample_replays() -> None:
    rep = parse_report(out_of("forker"))
    child = int(rep.all("fork")[0]["child"])
    t = open_trace(str(TRACES / "forker.trace"))
    ev = t.events
    exits = ev[(ev["pid"] == child) & (ev["kind"] == Kind.EXIT)]
    assert exits["a0"].tolist() == [3]
    s = json.loads(run_heapline("summary", str(TRACES / "forker.trace"), "--json", "--all-processes").stdout)
    (mine,) = [p for p in s["processes"] if p["pid"] == child]
    assert mine["brk"]["final"] == rep.brk("child-alloc")


def test_every_sample_has_its_report() -> None:
    for trace in TRACES.glob("*.trace"):
        assert Path(str(trace)[: -len(".trace")] + ".out").exists(), trace
        assert open_trace(str(trace)).complete


def test_human_summary_of_a_sample() -> None:
    r = run_heapline("summary", str(TRACES / "phases.trace"))
    assert r.returncode == 0, r.stderr
    rep = parse_report(out_of("phases"))
    assert hex(rep.brk("end")) in r.stdout and "MADV_DONTNEED" in r.stdout
