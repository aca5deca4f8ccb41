"""Resident memory by cause over time (the report's stacked area) against the workload's own
RssAnon, smaps and mallinfo2() at each mark of ``workloads/accounting.c``."""

from __future__ import annotations

import pytest
from helpers import needs_root
from test_accounting import SETTLE_MS, record

from tracer.analysis.accounting import account
from tracer.analysis.overtime import over_time, split

pytestmark = [pytest.mark.root, needs_root]
RSS_STAT_MS = 5  # the recorder coalesces rss_stat for 1 ms; the marked state is held for SETTLE_MS
HEAP_LAYERS = ("live", "allocator overhead", "cached", "free below the highest live chunk", "top")


@pytest.mark.parametrize("mode", ["frag", "thresholds", "threads"])
def test_layers_sum_to_rss_anon_and_split_it_as_smaps_does(tmp_path, mode: str) -> None:
    trace, rep = record(tmp_path, mode, {"HL_SETTLE_MS": str(SETTLE_MS)})
    truth = {r["name"]: r for r in rep.all("resident")}
    for i, mark in enumerate(rep.all("mark")):
        at_mark = split(account(trace, int(mark["ts"]) + RSS_STAT_MS * 1_000_000))
        if i:  # the first mark's line is the first the workload prints: it touches pages after the read
            assert sum(at_mark.values()) == int(mark["rss_anon"]), mark["name"]
        settled = account(trace, int(mark["ts"]) + (SETTLE_MS - 50) * 1_000_000)
        layers, w = split(settled), truth[mark["name"]]
        assert sum(layers.values()) == settled["resident"]["anon"], mark["name"]
        if mode != "threads":  # the main heap's layers are the [heap] mapping's Anonymous bytes
            assert sum(layers[k] for k in HEAP_LAYERS) == int(w["heap"]), mark["name"]
        if i and mode != "threads":
            assert layers["stacks"] == int(w["stack"]), mark["name"]
        in_use = settled["heap"]["in_use"] + settled["arenas"]["in_use"]
        if settled["resident"]["heap"] >= settled["heap"]["in_use"]:  # all in use is in RAM: mallinfo2's own
            used = layers["live"] + layers["allocator overhead"] + layers["cached"] - settled["heap"]["fastbins"]
            assert used + settled["arenas"]["cached"] == int(mark["uordblks"]) == in_use, mark["name"]


def test_over_time_covers_the_run_and_every_moment_sums_to_rss(tmp_path) -> None:
    trace, rep = record(tmp_path, "frag")
    o = over_time(trace)
    assert o is not None and len(o.ts) >= 400
    total = sum(o.layers.values())
    known = o.rss_anon >= 0
    assert known.any() and (total[known] == o.rss_anon[known]).all()
    assert o.layers["live"].max() > 0
