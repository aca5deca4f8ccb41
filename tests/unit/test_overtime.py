"""Resident memory by cause over time on recorded traces: every moment sums to RSS anon, and the
tiny-mallocs churn's freed chunks stay cached (tcache and fastbins) until malloc_trim."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT

from tracer.analysis.overtime import EVEN, LAYERS, over_time
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"
CHUNK = 32  # malloc(4) on x86-64 glibc
TCACHE = 7  # chunks per size class in a thread's tcache


@pytest.mark.parametrize("name", ["phases", "scenario-threads", "scenario-allocators", "scenario-allocators-jemalloc",
                                  "scenario-mmap-threshold", "sites"])
def test_every_moment_sums_to_rss_anon(name: str) -> None:
    t = open_trace(str(TRACES / f"{name}.trace"))
    o = over_time(t)
    assert o is not None and len(o.ts) >= EVEN and (np.diff(o.ts) > 0).all()
    assert set(o.layers) <= set(LAYERS) and all((v >= 0).all() for v in o.layers.values())
    known = o.rss_anon >= 0
    assert known.sum() > EVEN // 2
    assert (sum(o.layers.values())[known] == o.rss_anon[known]).all()


def test_freed_tiny_chunks_stay_cached_until_the_trim() -> None:
    t = open_trace(str(TRACES / "scenario-tiny-mallocs-20000.trace"))
    n = int(t.meta["command"][1])
    o = over_time(t)
    is_trim = t.columns["kind"] == 42  # Kind.MALLOC_TRIM
    (trim,) = t.columns["ts"][is_trim]
    (took,) = t.columns["dur"][is_trim]
    frees = t.columns["ts"][t.columns["kind"] == 36]
    idle = (o.ts > frees.max()) & (o.ts < trim)
    after = o.ts > trim + took
    assert idle.sum() > 10 and after.any()
    assert (o.layers["cached"][idle] == n * CHUNK).all()  # not one merged while the program waits
    assert (o.layers["live"][idle] == 0).all()
    assert (o.layers["cached"][after] == TCACHE * CHUNK).all()  # the trim consolidated the fastbins


def test_no_allocator_calls_nothing_to_account() -> None:
    assert over_time(open_trace(str(TRACES / "phases-strace.trace"))) is None
