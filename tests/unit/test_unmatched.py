"""Frees of blocks the trace never saw allocated, by cause: glibc's at thread exit, allocated before an
attach, and what is left (missed calls). Checked on real traces with calls taken out on purpose."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT

from tracer import fields as ef
from tracer.analysis import chunks as ch
from tracer.analysis.allocmodel import ended_by, opens_and_closes
from tracer.analysis.model import build, own_events
from tracer.analysis.unmatched import of_process, unmatched
from tracer.events import Kind
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"


def _events(name: str):  # noqa: ANN202
    t = open_trace(str(TRACES / f"{name}.trace"))
    ev, _, _ = own_events(t, build(t).pid)
    return ev


def _of(ev, snapshot=None):  # noqa: ANN001, ANN202
    b = ch.blocks(ev)
    ch.occupancy(b, ev, np.zeros(len(b), dtype=np.int64))
    return unmatched(ev, b, snapshot)


def _freed_opens(ev) -> np.ndarray:  # noqa: ANN001
    """Event indexes of the allocations (not reallocs: they end a block too) whose block a later
    traced call freed."""
    opens, closes = opens_and_closes(ev)
    ends = ended_by(opens, closes, ef.blocks.pointer_out(ev)[opens], ef.blocks.pointer_in(ev)[closes])
    opens = opens[ends >= 0]
    return opens[~np.isin(ev["kind"][opens], [Kind.REALLOC, Kind.REALLOCARRAY])]


def test_glibc_emptying_exiting_threads_tcaches_is_explained() -> None:
    t = open_trace(str(TRACES / "scenario-threads.trace"))
    u = of_process(t, int(t.meta["pid"]))
    assert (u.total, u.thread_exit, u.unexplained) == (32, 32, 0)  # 4 threads: 7 cached chunks + the tcache's own


@pytest.mark.parametrize("name", ["scenario-threads", "scenario-tiny-mallocs-20000", "phases", "scenario-realloc-grow"])
@pytest.mark.parametrize("missed", [1, 17, 500])
def test_every_allocation_taken_out_shows_as_unexplained(name: str, missed: int) -> None:
    ev = _events(name)
    before = _of(ev)
    rng = np.random.default_rng(missed)
    freed = _freed_opens(ev)
    drop = rng.choice(freed, min(missed, len(freed)), replace=False)
    keep = np.ones(len(ev), dtype=bool)
    keep[drop] = False
    after = _of(ev[keep])
    assert after.total == before.total + len(drop)
    if name == "scenario-threads":  # a missed malloc that took from a tcache leaves the model's tcache
        assert after.unexplained >= before.unexplained + len(drop)  # fuller: never fewer misses shown
    else:
        assert after.unexplained == before.unexplained + len(drop)


def test_blocks_allocated_before_an_attach_are_explained_by_its_snapshot() -> None:
    ev = _events("scenario-tiny-mallocs-20000")
    freed = _freed_opens(ev)
    cut = int(freed[len(freed) // 2])  # attach half way: the allocations before are not in the trace
    b = ch.blocks(ev)
    early = b.opened < int(ev["ts"][cut])
    k = ev["kind"]
    brk_rows = np.flatnonzero((k[:cut] == Kind.BRK) & ef.ok(ev[:cut]))
    heap_end = int(ev["ret"][brk_rows[-1]]) if len(brk_rows) else 0
    maps = [{"start": int(p) - 16, "end": int(p) - 16 + int(c)} for p, c in
            zip(b.ptr[early & b.mmapped].tolist(), b.chunk[early & b.mmapped].tolist(), strict=True)]
    snapshot = {"start_brk": int(b.ptr[early & ~b.mmapped].min()) - 16, "brk": heap_end, "mappings": maps}
    after = _of(ev[cut:], snapshot)
    late_frees_of_early = int((early & (b.closed != ch.NEVER) & (b.closed >= int(ev["ts"][cut]))).sum())
    assert late_frees_of_early > 1000
    assert (after.before_recording, after.unexplained) == (late_frees_of_early, 0)
    assert _of(ev[cut:]).unexplained == late_frees_of_early  # without the snapshot nothing explains them
