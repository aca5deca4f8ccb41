"""The chunk model: glibc's request sizes; the compiled tcache and fastbin walk against a plain reference."""

from __future__ import annotations

import copy

import binwalk_reference
import numpy as np
import pytest
from helpers import ROOT

import tracer.analysis.chunks as ch
from tracer.analysis.model import build, own_events
from tracer.tracefile import open_trace

SAMPLES = sorted((ROOT / "traces").glob("*.trace"))


def test_chunk_size_is_glibcs_request2size() -> None:
    n = np.array([0, 1, 24, 25, 40, 1032, 1033, 4088, 1 << 20])
    assert ch.chunk_size(n).tolist() == [32, 32, 32, 48, 48, 1040, 1056, 4096, (1 << 20) + 16]


def _walked(b: ch.Blocks, steps: tuple, arena: np.ndarray, ev_tid: np.ndarray, compiled: bool, **flags) -> tuple:
    b = copy.deepcopy(b)
    ts, what, idx = steps
    if compiled:
        mism = ch._walk(b, np.arange(len(ts)), ts, what, idx, arena, ev_tid, **flags)
    else:
        mism = binwalk_reference.walk(b, ts.tolist(), what.tolist(), idx.tolist(), arena, ev_tid, **flags)
    return b.went.tolist(), b.occupied_until.tolist(), int(mism)


def _random_blocks(rng: np.random.Generator, n: int, threads: int) -> tuple[ch.Blocks, tuple, np.ndarray, np.ndarray]:
    """``n`` small blocks of a few classes over ``threads`` threads and two arenas, freed or not, and
    the walk's steps over them: frees, hand-outs, consolidations (one arena or all) and exits."""
    size = rng.choice([24, 40, 72, 120, 200, 1000], n)
    opened = np.sort(rng.integers(0, 10**9, n))
    closed = np.where(rng.random(n) < 0.8, opened + rng.integers(1, 10**8, n), ch.NEVER)
    tid = rng.integers(1, threads + 1, n).astype(np.uint32)
    b = ch.Blocks(ptr=rng.integers(1, 64, n).astype(np.uint64) * 64, size=size, chunk=ch.chunk_size(size),
                  mmapped=np.zeros(n, bool), opened=opened, closed=closed, open_tid=tid,
                  close_tid=np.where(closed != ch.NEVER, rng.integers(1, threads + 1, n), 0).astype(np.uint32),
                  close_kind=np.zeros(n, np.uint16), tcache_take=rng.random(n) < 0.9, went=np.zeros(n, np.int8),
                  occupied_until=closed.copy())
    freed = np.flatnonzero(closed != ch.NEVER)
    cons = rng.integers(0, 10**9, 20)
    exits_at = rng.integers(5 * 10**8, 11 * 10**8, threads)
    ts = np.concatenate([closed[freed], opened, cons, exits_at])
    what = np.concatenate([np.zeros(len(freed)), np.ones(n), np.full(20, 2), np.full(threads, 3)]).astype(np.int64)
    idx = np.concatenate([freed, np.arange(n), rng.integers(-1, n, 20), np.arange(threads)])
    order = np.argsort(ts, kind="stable")
    arena = rng.integers(0, 2, n).astype(np.int64)
    return b, (ts[order], what[order], idx[order]), arena, np.arange(1, threads + 1, dtype=np.uint32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("flags", [dict(tcache=True, fastbins=True), dict(tcache=False, fastbins=True),
                                   dict(tcache=True, fastbins=False)], ids=["both", "no-tcache", "no-fastbins"])
def test_compiled_walk_equals_the_reference(seed: int, flags: dict) -> None:
    rng = np.random.default_rng(seed)
    b, steps, arena, ev_tid = _random_blocks(rng, 3000, threads=1 + seed % 3)
    got = _walked(b, steps, arena, ev_tid, True, **flags)
    assert got == _walked(b, steps, arena, ev_tid, False, **flags)
    if flags["tcache"] and flags["fastbins"]:  # the streams reach every path
        assert got[2] > 0 and ch.FAST in got[0] and ch.CACHED in got[0]


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_compiled_walk_equals_the_reference_on_samples(path, monkeypatch) -> None:
    t = open_trace(str(path))
    ev, _, _ = own_events(t, build(t).pid)
    b = ch.blocks(ev)
    seen = {}

    def capture(b, order, ts, what, idx, arena_of, ev_tid, tcache, fastbins):  # noqa: ANN001, ANN202
        seen["args"] = (copy.deepcopy(b), (ts[order], what[order], idx[order]), arena_of, ev_tid)
        return 0
    monkeypatch.setattr(ch, "_walk", capture)
    ch.occupancy(b, ev, np.zeros(len(b), dtype=np.int64))
    monkeypatch.undo()
    if "args" not in seen:  # no allocator calls (the strace backend): nothing to walk
        assert len(b) == 0
        return
    b0, steps, arena, ev_tid = seen["args"]
    assert _walked(b0, steps, arena, ev_tid, True, tcache=True, fastbins=True) == \
        _walked(b0, steps, arena, ev_tid, False, tcache=True, fastbins=True)
