"""The address map names what each mapping is, against what the workloads printed of themselves."""

from __future__ import annotations

import re

import numpy as np
from helpers import ROOT, parse_report
from test_report import figure, traces_of

from tracer.analysis.explain import explain
from tracer.analysis.model import build
from tracer.tracefile import open_trace
from viz.addrmap import AddressAxis, address_axis
from viz.report import write_report

TRACES = ROOT / "traces"
HEADER = 16  # glibc's mmapped chunk starts 16 bytes before the block
RANGE = re.compile(r"(0x[0-9a-f]+)–(0x[0-9a-f]+)")


def _page(name: str, tmp_path) -> dict:
    out = tmp_path / f"{name}.html"
    t = open_trace(str(TRACES / f"{name}.trace"))
    write_report(t, out, [f.to_json() for f in explain(t)])  # as `heapline report` does
    return figure(out.read_text())


def _starts(traces: list[dict]) -> set[int]:
    return {int(RANGE.search(h)[1], 16) for t in traces for h in t["hovertext"]}


def test_malloc_s_own_mappings_are_named(tmp_path) -> None:
    fig = _page("scenario-mmap-threshold", tmp_path)
    rep = parse_report((TRACES / "scenario-mmap-threshold.out").read_text())
    mmapped = {int(b["ptr"], 16) - HEADER for b in rep.all("block") if b["mmapped"] == "1"}
    assert len(mmapped) == 2
    assert _starts(traces_of(fig, panel="map", what="malloc-mmap")) == mmapped
    assert not _starts(traces_of(fig, panel="map", what="anon")) & mmapped
    for t in traces_of(fig, panel="map", what="malloc-mmap"):
        assert all("B requested at" in h for h in t["hovertext"])


def test_jemalloc_regions_are_not_called_glibc_arenas(tmp_path) -> None:
    fig = _page("scenario-allocators-jemalloc", tmp_path)
    names = {t["name"] for t in traces_of(fig, panel="map", what="heap-arena")}
    assert names == {"jemalloc's regions"}
    glibc = {t["name"] for t in traces_of(_page("scenario-threads", tmp_path), panel="map", what="heap-arena")}
    assert glibc == {"thread-arena heaps"}


def test_the_pinning_block_is_marked_where_the_program_says(tmp_path) -> None:
    name = "scenario-tiny-mallocs-20000-pin"
    fig = _page(name, tmp_path)
    (kv,) = parse_report((TRACES / f"{name}.out").read_text()).all("pin")
    (pin,) = traces_of(fig, panel="map", what="pin")
    assert kv["ptr"] in pin["hovertext"][0]
    heap = traces_of(fig, panel="map", what="heap")[0]  # the same axis: the pin sits inside the heap band
    assert min(heap["y"]) < pin["y"][0] <= max(heap["y"])
    # no pin where nothing pins the break
    assert not traces_of(_page("scenario-tiny-mallocs-20000", tmp_path), panel="map", what="pin")


def test_ticks_are_offsets_from_each_cluster_s_base() -> None:
    ax = address_axis(np.array([0x10000, 0x7F0000000000]), np.array([0x10000 + (4 << 20), 0x7F0000000000 + (1 << 20)]))
    assert isinstance(ax, AddressAxis)
    vals, text = ax.ticks({0x10000: "start_brk"})
    assert "start_brk" in text and "0x10000" not in text  # the name replaces the base it sits on
    assert "0x7f0000000000" in text
    assert all(t.startswith("+") for t in text if t not in ("start_brk", "0x7f0000000000"))
    assert "+4 MiB" in text


def test_map_of_every_sample_stays_on_its_axis(tmp_path) -> None:
    for name in ("phases", "scenario-threads", "sites"):
        fig = _page(name, tmp_path)
        tl = build(open_trace(str(TRACES / f"{name}.trace")))
        assert len(traces_of(fig, panel="map")) >= 2, tl.pid
        ys = np.concatenate([np.asarray(t["y"], dtype=float) for t in traces_of(fig, panel="map")])
        ys = ys[~np.isnan(ys)]
        assert ys.min() >= 0 and ys.max() <= 1


def test_arena_slices_merge_only_within_a_pixel() -> None:
    from viz.addrmap import merge_slices
    from viz.figures import span_of
    from viz.reduce import MARKER_BUCKETS

    t = open_trace(str(TRACES / "scenario-threads.trace"))
    tl = build(t)
    mp = tl.mappings
    t0, end = span_of(t, tl)
    span = end - t0  # as the report draws it
    merged = merge_slices(mp, span)
    arena, bars = mp[mp["what"] == "heap-arena"], merged[merged["what"] == "heap-arena"]
    assert len(bars) < len(arena) // 5  # the per-page steps are gone
    assert int(bars["size"].sum()) == int(arena["size"].sum()) and int(bars["slices"].sum()) == len(arena)
    tol = span / MARKER_BUCKETS
    for r in arena.itertuples():  # each slice inside one bar alike, drawn within a pixel of its own times
        (hit,) = bars[(bars["start"] <= r.start) & (bars["end"] >= r.end) & (bars["prot"] == r.prot)
                      & (bars["born"] <= r.born) & (bars["died"] >= r.died)].itertuples()
        assert abs(hit.born - r.born) <= tol and abs(hit.died - r.died) <= tol
    others = mp[mp["what"] != "heap-arena"].assign(slices=1, born_last=lambda d: d["born"],
                                                   died_first=lambda d: d["died"])
    assert merged[merged["what"] != "heap-arena"].reset_index(drop=True).equals(others.reset_index(drop=True))


def test_the_page_says_it_merged_slices(tmp_path) -> None:
    out = tmp_path / "threads.html"
    built = write_report(TRACES / "scenario-threads.trace", out)
    assert built["reduced"] and built["mapping_slices_merged"] > 0
    assert f"{built['mapping_slices_merged']:,} slices of thread heaps" in out.read_text()
