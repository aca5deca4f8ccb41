"""The timeline model on the committed sample traces (no root): frames against the workload's report."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT, num, parse_report

from tracer.analysis.model import build
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


@pytest.mark.parametrize("steps", [0, 2, 64])  # by thread only, stepping back then by thread, stepping back
@pytest.mark.parametrize("threads", [1, 3, 40])  # the per-thread scan and the grouped one
def test_last_before_matches_a_plain_search(monkeypatch: pytest.MonkeyPatch, threads: int, steps: int) -> None:
    from tracer.analysis import model
    from tracer.analysis.model import _last_before
    from tracer.events import EVENT_DTYPE

    monkeypatch.setattr(model, "STEPS_BACK", steps)

    rng = np.random.default_rng(threads)
    ev = np.zeros(5000, dtype=EVENT_DTYPE)
    ev["ts"] = np.sort(rng.integers(0, 20_000, len(ev)))  # with ties
    ev["tid"] = rng.integers(1, threads + 1, len(ev))
    cand = np.flatnonzero(rng.random(len(ev)) < 0.6)
    q_ts, q_tid = rng.integers(-10, 20_010, 300), rng.integers(1, threads + 2, 300)
    for strict in (False, True):
        got = _last_before(ev, cand, q_ts, q_tid, strict)
        for i, (t, tid) in enumerate(zip(q_ts.tolist(), q_tid.tolist(), strict=True)):
            before = [c for c in cand.tolist()
                      if ev["tid"][c] == tid and (ev["ts"][c] < t if strict else ev["ts"][c] <= t)]
            assert got[i] == (before[-1] if before else -1)


def test_memory_axis_carries_each_series_forward() -> None:
    import pandas as pd

    from tracer.analysis.model import _memory

    breaks = pd.DataFrame({"ts": [10, 30, 30], "heap": [100, 200, 300]})
    anon = pd.DataFrame({"ts": [5, 20], "anon_mapped": [0, 4096]})
    live = pd.DataFrame({"ts": [12, 13, 30, 40], "live_bytes": [50, 60, 10, 0]})
    rss = pd.DataFrame({"ts": [25, 11], "anon": [8192, 4096]})  # out of order on purpose
    m = _memory(breaks, anon, live, rss, t0=5)
    assert m["ts"].tolist() == [5, 10, 11, 12, 13, 20, 25, 30, 40]
    assert m["heap"].tolist() == [0, 100, 100, 100, 100, 100, 100, 300, 300]
    assert m["anon_mapped"].tolist() == [0, 0, 0, 0, 0, 4096, 4096, 4096, 4096]
    assert m["live_bytes"].tolist() == [0, 0, 0, 50, 60, 60, 60, 10, 0]
    assert m["rss_anon"].tolist() == [0, 0, 4096, 4096, 4096, 4096, 8192, 8192, 8192]
    assert (m["footprint"] == m["heap"] + m["anon_mapped"]).all()
    assert (m["retained"] == m["footprint"] - m["live_bytes"]).all()


@pytest.mark.parametrize("path", sorted(p.name for p in TRACES.glob("*.trace")))
def test_state_at_exit_is_the_timelines(path: str) -> None:
    """The exit of each process, found without its timeline (a build forks hundreds), is what its
    timeline holds at that moment."""
    from tracer.analysis.model import state_at_exit
    from tracer.events import Kind

    t = open_trace(str(TRACES / path))
    cols = t.columns
    pids = sorted(set(cols["pid"].tolist()))
    exited = set(cols["pid"][(cols["kind"] == int(Kind.EXIT)) & (cols["a2"] == 1)].tolist())
    for pid in pids:
        st = state_at_exit(t, pid)
        assert (st is not None) == (pid in exited)
        if st is None:
            continue
        last = build(t, pid).memory.query("ts <= @st.ts").iloc[-1]
        assert (st.footprint, st.rss_anon) == (int(last["footprint"]), int(last["rss_anon"])), (path, pid)


@pytest.mark.parametrize("path", sorted(p.name for p in TRACES.glob("*.trace")))
def test_summary_mappings_are_the_timelines(path: str) -> None:
    """The summary takes the traced process's mapped bytes from its timeline, which equal an
    independent replay of its successful mapping calls into an address space."""
    from tracer.analysis.addrspace import AddressSpace
    from tracer.analysis.model import map_snapshot, own_events, replay_mappings
    from tracer.analysis.summary import summarize

    t = open_trace(str(TRACES / path))
    ev, kind, snap = own_events(t, int(t.header["pid"]))
    space = AddressSpace(int(t.meta.get("machine", {}).get("page_size", 4096)))
    if snap is not None:
        map_snapshot(space, snap)
    peak = space.anon_bytes
    for _ in replay_mappings(ev, kind, space):
        peak = max(peak, space.anon_bytes)
    mapped = summarize(t)["mmap"]
    assert mapped == {"anon_bytes_final": space.anon_bytes, "anon_bytes_peak": peak}
    assert peak >= space.anon_bytes >= 0


def test_at_is_the_memory_row(sample) -> None:
    """``Timeline.at`` (what findings ask without building the frame) is the frame's row at each time,
    between rows and on them."""
    tl, _ = sample
    m = tl.memory
    ts = m["ts"].to_numpy(np.int64)
    rng = np.random.default_rng(5)
    for t in [int(ts[0]), int(ts[-1]), int(ts[-1]) + 10**9, *rng.choice(ts, 40).tolist(),
              *(rng.choice(ts, 40) + 1).tolist()]:
        row = m[m["ts"] <= t].iloc[-1]
        assert tl.at(t) == {k: int(row[k]) for k in m.columns if k != "ts"}
