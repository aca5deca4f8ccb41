"""The chunk model's two paths agree: the vectorized tcache pairing and the sequential walk."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT

import tracer.analysis.chunks as ch
from tracer.analysis.model import build, own_events
from tracer.tracefile import open_trace

SAMPLES = sorted((ROOT / "traces").glob("*.trace"))


def _occupancy(path, vectorized: bool, monkeypatch):  # noqa: ANN001, ANN202
    t = open_trace(str(path))
    ev, _, _ = own_events(t, build(t).pid)
    b = ch.blocks(ev)
    with monkeypatch.context() as m:
        if not vectorized:
            m.setattr(ch, "_tcache_only", lambda b, ts, *a: (np.ones(len(ts), dtype=bool), 0))
        ch.occupancy(b, ev, np.zeros(len(b), dtype=np.int64))
    return b


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_vectorized_tcache_equals_the_walk(path, monkeypatch) -> None:
    fast, slow = _occupancy(path, True, monkeypatch), _occupancy(path, False, monkeypatch)
    assert (fast.went == slow.went).all()
    assert (fast.occupied_until == slow.occupied_until).all()
    assert fast.mismatches == slow.mismatches


def test_chunk_size_is_glibcs_request2size() -> None:
    n = np.array([0, 1, 24, 25, 40, 1032, 1033, 4088, 1 << 20])
    assert ch.chunk_size(n).tolist() == [32, 32, 32, 48, 48, 1040, 1056, 4096, (1 << 20) + 16]
