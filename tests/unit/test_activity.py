"""Allocator activity per time slice on recorded traces, against what the workloads did."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT, parse_report

from tracer.analysis.activity import SLICES, activity
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"


@pytest.mark.parametrize(("name", "pinned"),
                         [("scenario-tiny-mallocs-20000", 0), ("scenario-tiny-mallocs-20000-pin", 1)])
def test_tiny_mallocs_churn_is_counted_block_by_block(name: str, pinned: int) -> None:
    """tiny-mallocs N: N malloc(4), then the frees in allocation order (all but the last with pin),
    then one malloc_trim(0) whose result the workload printed."""
    t = open_trace(str(TRACES / f"{name}.trace"))
    n = int(t.meta["command"][1])
    a = activity(t, int(t.meta["pid"]))
    assert len(a.allocated) == SLICES and len(a.edges) == SLICES + 1
    assert int(a.allocated.sum()) == n and int(a.allocated_bytes.sum()) == 4 * n
    assert int(a.freed.sum()) == n - pinned and int(a.freed_bytes.sum()) == 4 * (n - pinned)
    assert np.flatnonzero(a.allocated).max() <= np.flatnonzero(a.freed).min()  # all allocated, then freed
    rep = parse_report((TRACES / f"{name}.out").read_text())
    (trim,) = rep.all("malloc_trim")
    assert a.trims[:, 2:].tolist() == [[int(trim["pad"]), int(trim["ret"])]]
    assert a.trims[0, 0] > a.edges[np.flatnonzero(a.freed).max()]  # after the frees


def test_a_trace_without_allocator_calls_has_no_activity() -> None:
    t = open_trace(str(TRACES / "phases-strace.trace"))
    a = activity(t, int(t.meta["pid"]))
    assert a.total == 0 and not len(a.trims)
