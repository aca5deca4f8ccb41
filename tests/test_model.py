"""The timeline model on the committed sample traces (no root): frames against the workload's report."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, num, parse_report

from tracer.model import build
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"
PAGE = 4096


@pytest.fixture(scope="module", params=["phases", "phases-strace", "phases-attach"])
def sample(request):
    name = request.param
    return build(open_trace(str(TRACES / f"{name}.trace"))), parse_report((TRACES / f"{name}.out").read_text())


def test_breaks_and_heap(sample) -> None:
    tl, rep = sample
    assert tl.start_brk == rep.brk("start")
    assert tl.breaks["brk"].iloc[-1] == rep.brk("end")
    assert tl.breaks["heap"].max() == rep.brk("alloc") - rep.brk("start")
    assert (tl.breaks["heap"] == tl.breaks["brk"] - tl.start_brk).all()


def test_releases_are_the_programs(sample) -> None:
    tl, rep = sample
    r = tl.releases
    mad = r[r["call"] == "madvise"]
    assert sorted(zip(mad["start"].tolist(), mad["bytes"].tolist(), mad["advice"], strict=True)) == sorted(
        (num(kv["addr"]), int(kv["len"]), {4: "MADV_DONTNEED", 8: "MADV_FREE"}[int(kv["advice"])])
        for kv in rep.all("madvise")
    )
    unmapped = set(zip(r[r["call"] == "munmap"]["start"].tolist(), r[r["call"] == "munmap"]["bytes"].tolist(),
                       strict=True))
    for kv in rep.all("munmap"):
        assert (num(kv["addr"]), int(kv["len"])) in unmapped
    # the break fell from its peak to where the program saw it end, in page steps
    assert r[r["call"] == "brk"]["bytes"].sum() >= rep.brk("alloc") - rep.brk("free")
    assert (r["ts"].diff().dropna() >= 0).all()


def test_mappings_have_lifetimes(sample) -> None:
    tl, rep = sample
    mp = tl.mappings
    assert (mp["died"] >= mp["born"]).all() and (mp["end"] > mp["start"]).all()
    (moved,) = rep.all("mremap")
    grown = mp[(mp["start"] == num(moved["new"])) & (mp["size"] == int(moved["newlen"]))]
    assert len(grown) == 1 and grown["ended_by"].iloc[0] == "munmap"
    assert set(mp["what"]) <= {"anon", "file", "stack", "heap-arena"}


def test_memory_on_one_axis(sample) -> None:
    tl, _ = sample
    m = tl.memory
    assert (np.diff(m["ts"]) > 0).all()
    assert (m["footprint"] == m["heap"] + m["anon_mapped"]).all()
    assert (m["retained"] == m["footprint"] - m["live_bytes"]).all()
    assert m["anon_mapped"].max() - m["anon_mapped"].iloc[-1] >= 32 * PAGE
