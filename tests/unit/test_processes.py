"""The processes of a trace, named by the program they run (pure parts, on committed traces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracer import fields as ef
from tracer.analysis.processes import processes
from tracer.decode import comm_str, comm_words
from tracer.events import Kind
from tracer.tracefile import open_trace

TRACES = Path(__file__).resolve().parents[2] / "traces"


def test_comm_words_round_trip_as_the_kernel_keeps_it() -> None:
    assert comm_str(*comm_words("cc1")) == "cc1"
    assert comm_str(*comm_words("x" * 40)) == "x" * 15  # TASK_COMM_LEN - 1
    assert comm_str(0, 0) == ""
    lo, hi = comm_words("gcc")
    assert lo == int.from_bytes(b"gcc\0\0\0\0\0", "little") and hi == 0


def test_a_forked_child_is_named_after_its_parent_and_its_figures_are_its_own() -> None:
    t = open_trace(str(TRACES / "scenario-fork-exit.trace"))
    root, child = processes(t)
    assert (root.pid, root.program, root.named_by, root.parent) == (int(t.meta["pid"]), "fork-exit", "command", None)
    assert (child.program, child.named_by, child.parent) == ("fork-exit", "parent", root.pid)
    ev = t.columns
    for p in (root, child):
        mine = ev[ev["pid"] == p.pid]
        rss = mine[mine["kind"] == int(Kind.RSS)]
        assert p.rss_anon_peak == int(np.maximum(ef.rss.anon(rss), ef.rss.anon_high(rss)).max())
        assert p.alloc_calls == int((mine["kind"] >= int(Kind.MALLOC)).sum())
        assert p.exited and p.start_ns == int(mine["ts"][0]) and p.end_ns == int(mine["ts"][-1])
    assert child.rss_anon_peak > root.rss_anon_peak  # the child held the most (CHILD_HOLDS_MOST says so too)
    assert root.label == f"pid {root.pid} fork-exit, traced" and child.label == f"pid {child.pid} fork-exit"


def test_one_process_traces() -> None:
    for name in ("phases", "phases-attach", "phases-strace", "scenario-threads"):
        t = open_trace(str(TRACES / f"{name}.trace"))
        (p,) = processes(t)
        assert p.pid == int(t.meta["pid"]) and p.parent is None and p.program
