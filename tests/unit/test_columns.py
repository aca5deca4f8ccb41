"""Columns: selecting events as a structured array would, and merging parts in time order."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.columns import Columns
from tracer.events import EVENT_DTYPE


def records(n: int, seed: int, sort: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["ts"] = rng.integers(0, 500, n)  # plenty of equal times
    if sort:
        ev["ts"].sort()
    ev["a0"] = np.arange(n) + 1000 * seed  # tells the rows apart
    ev["kind"] = rng.integers(1, 46, n)
    return ev


def test_selects_like_a_structured_array() -> None:
    ev = records(300, 1)
    cols = Columns.from_records(ev)
    mask = ev["kind"] > 20
    assert np.array_equal(cols[mask].to_records(), ev[mask])
    idx = np.array([5, 3, 299, 0])
    assert np.array_equal(cols[idx].to_records(), ev[idx])
    assert np.array_equal(cols[10:20].to_records(), ev[10:20])
    assert np.array_equal(cols["a0"], ev["a0"])


@pytest.mark.parametrize("sizes", [(50, 2000, 3), (2000, 40), (7, 9, 3000, 0, 12), (1000,), ()])
def test_merged_is_a_stable_sort_of_the_concatenation(sizes: tuple[int, ...]) -> None:
    parts = [records(n, i + 1, sort=i != 1) for i, n in enumerate(sizes)]  # one part unsorted
    got = Columns.merged([Columns.from_records(p) for p in parts]).to_records()
    every = np.concatenate(parts) if parts else np.zeros(0, dtype=EVENT_DTYPE)
    want = every[np.argsort(every["ts"], kind="stable")]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("max_runs", [0, 1024])
def test_sort_in_place_is_a_stable_sort(max_runs: int) -> None:
    """Nearly sorted times (a few events moved, ties, and wholly random ones): the same order as
    a stable argsort, by sorting the stretches out of place (or, past max_runs, everything)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(2, 400))
        ts = np.sort(rng.integers(0, 50, size=n)).astype(np.uint64)
        for _ in range(int(rng.integers(0, 5))):
            i, j = rng.integers(0, n, size=2)
            ts[i], ts[j] = ts[j], ts[i]
        if rng.random() < 0.3:
            ts = rng.integers(0, 20, size=n).astype(np.uint64)
        cols = {name: np.zeros(n, EVENT_DTYPE[name]) for name in EVENT_DTYPE.names}
        cols["ts"], cols["a0"] = ts.copy(), np.arange(n, dtype=np.uint64)
        cols["pid"].flags.writeable = False  # copied, not written through
        got = Columns(cols).sort_by_time_in_place(max_runs=max_runs)
        want = np.argsort(ts, kind="stable")
        assert (got["a0"] == want).all() and (got["ts"] == ts[want]).all()
