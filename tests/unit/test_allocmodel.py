"""Live bytes and blocks from allocator calls, on hand-built event sequences."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.analysis import allocmodel
from tracer.analysis.allocmodel import inherited, live_series
from tracer.events import EVENT_DTYPE, Kind
from tracer.fields import blocks


def calls(*rows: tuple) -> np.ndarray:
    """rows: (kind, a0, a1, a2, a3, ret) in time order."""
    ev = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, (kind, a0, a1, a2, a3, ret) in enumerate(rows):
        ev[i]["ts"], ev[i]["kind"] = 1000 + i, kind
        ev[i]["a0"], ev[i]["a1"], ev[i]["a2"], ev[i]["a3"], ev[i]["ret"] = a0, a1, a2, a3, ret
    return ev


A, B, C, D = 0x1000, 0x2000, 0x3000, 0x4000


def test_malloc_free_and_friends() -> None:
    ev = calls(
        (Kind.MALLOC, 100, 0, 0, 0, A),
        (Kind.CALLOC, 3, 10, 0, 0, B),
        (Kind.POSIX_MEMALIGN, 0x7FF0, 64, 256, C, 0),
        (Kind.FREE, A, 0, 0, 0, 0),
        (Kind.FREE, 0, 0, 0, 0, 0),  # free(NULL): nothing
        (Kind.ALIGNED_ALLOC, 64, 128, 0, 0, D),
    )
    s = live_series(ev)
    assert s.live_bytes.tolist() == [100, 130, 386, 286, 414]
    assert s.bytes_peak == 414 and s.bytes_final == 414 and s.blocks_final == 3
    assert s.unmatched_frees == 0
    assert sorted(s.open_ptr.tolist()) == [B, C, D]


def test_realloc_moves_stays_frees_and_fails() -> None:
    ev = calls(
        (Kind.MALLOC, 100, 0, 0, 0, A),
        (Kind.REALLOC, A, 50, 0, 0, A),  # shrinks in place
        (Kind.REALLOC, A, 1000, 0, 0, B),  # moves
        (Kind.REALLOC, 0, 10, 0, 0, C),  # realloc(NULL, n) is a malloc
        (Kind.REALLOC, C, 1 << 40, 0, 0, 0),  # fails: C stays
        (Kind.REALLOC, B, 0, 0, 0, 0),  # realloc(p, 0) frees
    )
    s = live_series(ev)
    assert s.live_bytes.tolist() == [100, 0, 50, 0, 1000, 1010, 10]
    assert s.bytes_final == 10 and s.blocks_final == 1 and s.open_ptr.tolist() == [C]


def test_frees_of_blocks_from_before_tracing_are_unmatched() -> None:
    ev = calls(
        (Kind.FREE, A, 0, 0, 0, 0),  # allocated before the attach
        (Kind.MALLOC, 8, 0, 0, 0, B),
        (Kind.FREE, B, 0, 0, 0, 0),
        (Kind.FREE, B, 0, 0, 0, 0),  # double free
        (Kind.MALLOC, 16, 0, 0, 0, B),  # the address is reused
    )
    s = live_series(ev)
    assert s.unmatched_frees == 2
    assert s.bytes_final == 16 and s.blocks_final == 1 and s.bytes_peak == 16


def test_requested_sizes() -> None:
    ev = calls(
        (Kind.REALLOCARRAY, 0, 7, 9, 0, A),
        (Kind.PVALLOC, 5000, 0, 0, 0, B),
        (Kind.VALLOC, 10, 0, 0, 0, C),
        (Kind.NEW, 24, 0, 0, 0, D),
    )
    assert blocks.requested_size(ev).tolist() == [63, 5000, 10, 24]


def test_empty() -> None:
    s = live_series(np.zeros(0, dtype=EVENT_DTYPE))
    assert s.bytes_final == 0 and s.bytes_peak == 0 and s.unmatched_frees == 0


def _proc(ev: np.ndarray, pid: int) -> np.ndarray:
    ev["pid"] = pid
    return ev


def _fork(ts: int, parent: int, child: int, thread: bool = False) -> np.ndarray:
    ev = np.zeros(1, dtype=EVENT_DTYPE)
    ev["ts"], ev["pid"], ev["kind"], ev["a0"], ev["a2"] = ts, parent, Kind.FORK, child, int(thread)
    return ev


def _at(ev: np.ndarray, t0: int) -> np.ndarray:
    ev["ts"] += t0 - 1000
    return ev


def test_a_forked_child_starts_with_its_parents_live_blocks() -> None:
    parent = _proc(calls((Kind.MALLOC, 100, 0, 0, 0, A), (Kind.MALLOC, 200, 0, 0, 0, B),
                         (Kind.FREE, A, 0, 0, 0, 0)), 10)  # fmt: skip
    child = _proc(_at(calls((Kind.FREE, B, 0, 0, 0, 0), (Kind.MALLOC, 50, 0, 0, 0, C)), 5000), 11)
    later = _proc(_at(calls((Kind.MALLOC, 7, 0, 0, 0, D)), 6000), 10)  # the parent's, after the fork
    grandchild = _proc(_at(calls((Kind.FREE, C, 0, 0, 0, 0), (Kind.FREE, B, 0, 0, 0, 0)), 8000), 12)
    ev = np.concatenate([parent, _fork(4000, 10, 11), child, later, _fork(7000, 11, 12), grandchild])
    ev = ev[np.argsort(ev["ts"], kind="stable")]

    got = inherited(ev, 11)
    assert got is not None and got.ptr.tolist() == [B] and got.size.tolist() == [200] and got.at == 4000
    assert got.ts.tolist() == [1001]  # when the parent allocated it
    s = live_series(ev[ev["pid"] == 11], got)
    assert s.live_bytes.tolist() == [200, 0, 50]
    assert s.unmatched_frees == 0 and s.open_ptr.tolist() == [C]
    # the grandchild got C from the child (B was freed there before the fork): B is unmatched
    g = inherited(ev, 12)
    assert g is not None and g.ptr.tolist() == [C]
    s = live_series(ev[ev["pid"] == 12], g)
    assert s.live_bytes.tolist() == [50, 0, 0] and s.unmatched_frees == 1
    assert inherited(ev, 10) is None  # not forked by a traced process


def test_threads_and_execd_children_inherit_nothing() -> None:
    parent = _proc(calls((Kind.MALLOC, 100, 0, 0, 0, A)), 10)
    execd = np.zeros(1, dtype=EVENT_DTYPE)
    execd["ts"], execd["pid"], execd["kind"] = 6000, 11, Kind.EXEC
    ev = np.concatenate([parent, _fork(4000, 10, 11), execd, _fork(7000, 10, 12, thread=True)])
    assert inherited(ev, 11) is None
    assert inherited(ev, 12) is None


@pytest.mark.parametrize("seed", range(4))
def test_call_order_places_every_call_as_a_search_would(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, 2000)  # 0 open, 1 close, 2 both (a realloc), 3 neither
    events = np.arange(len(kind))
    opens, closes = events[(kind == 0) | (kind == 2)], events[(kind == 1) | (kind == 2)]
    if seed == 3:
        opens = opens[:0]
    at_open, at_close = allocmodel.call_order(opens, closes)
    assert np.array_equal(at_open, np.arange(len(opens)) + np.searchsorted(closes, opens, side="right"))
    assert np.array_equal(at_close, np.arange(len(closes)) + np.searchsorted(opens, closes, side="left"))
    assert np.array_equal(np.sort(np.concatenate([at_open, at_close])), np.arange(len(opens) + len(closes)))
