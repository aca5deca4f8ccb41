"""The free chunks under the break, listed: against what the workloads did, the accounting's own
figures at many moments, and the address map that draws them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT, parse_report
from test_report import figure, traces_of

from tracer.analysis.accounting import account_at, last_moment, main_free_runs
from tracer.analysis.model import build
from tracer.analysis.otheralloc import is_other
from tracer.tracefile import open_trace
from viz.report import write_report

TRACES = ROOT / "traces"
GLIBC_SAMPLES = sorted(p.stem for p in TRACES.glob("*.trace") if not is_other(open_trace(str(p))))


def chunk_of(n: int) -> int:
    """glibc 2.36 x86-64: a request's chunk."""
    return max(32, (n + 8 + 15) & ~15)


@pytest.mark.parametrize("args,runs", [("2", 500), ("1-1-999", 1), ("1-500-1000", 0)])
def test_free_and_sbrk_leaves_the_runs_its_frees_make(args: str, runs: int) -> None:
    name = f"scenario-free-and-sbrk-1000-10240-{args}"
    t = open_trace(str(TRACES / f"{name}.trace"))
    (kv,) = parse_report((TRACES / f"{name}.out").read_text()).all("args")
    n, size, step, lo, hi = (int(kv[k]) for k in ("n", "size", "step", "min", "max"))
    r = main_free_runs(t, last_moment(t, build(t).pid))
    assert len(r) == runs
    freed = len(range(lo, hi + 1, step))
    if step == 1 and hi < n:  # one run of every freed chunk, merged, under the last block
        assert (r[:, 1] - r[:, 0]).tolist() == [freed * chunk_of(size)]
    elif step > 1:  # every other block: no two freed chunks touch
        assert (r[:, 1] - r[:, 0]).tolist() == [chunk_of(size)] * freed
    assert (np.diff(r.ravel()) >= 0).all()  # in address order, disjoint


@pytest.mark.parametrize("name", GLIBC_SAMPLES)
def test_runs_are_the_accounting_s_free_chunks(name: str) -> None:
    t = open_trace(str(TRACES / f"{name}.trace"))
    tl = build(t)
    end = last_moment(t, tl.pid)
    t0 = int(tl.memory["ts"].iloc[0]) if len(tl.memory) else end
    moments = [int(x) for x in np.linspace(t0, end, 25)]
    for ts, acc in zip(moments, account_at(t, moments), strict=True):
        h = acc.get("heap") or {}
        r = main_free_runs(t, ts)
        assert len(r) == h.get("free_runs", 0)
        assert int((r[:, 1] - r[:, 0]).sum()) == h.get("free", 0) - h.get("top", 0) - h.get("fastbins", 0)


def test_the_map_draws_them_at_the_end(tmp_path) -> None:
    name = "scenario-free-and-sbrk-1000-10240-2"
    out = tmp_path / "p.html"
    write_report(TRACES / f"{name}.trace", out)
    fig = figure(out.read_text())
    (marks,) = traces_of(fig, panel="map", what="free-runs")
    assert marks["meta"]["count"] == 500 and marks["meta"]["bytes"] == 500 * chunk_of(10240)
    assert len(marks["hovertext"]) == 500 and "10 KiB" in marks["hovertext"][0]
    assert not traces_of(figure(_page(tmp_path, "scenario-free-and-sbrk-1000-10240-1-500-1000")), what="free-runs")


def _page(tmp_path, name: str) -> str:
    out = tmp_path / f"{name}.html"
    write_report(TRACES / f"{name}.trace", out)
    return out.read_text()
