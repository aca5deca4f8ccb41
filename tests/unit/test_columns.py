"""Columns: selecting events as a structured array would, and merging parts in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracer import columns
from tracer.columns import Columns, Sparse
from tracer.events import EVENT_DTYPE, Kind


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


def sparse_records(n: int, seed: int, density: float) -> np.ndarray:
    ev = records(n, seed)
    rng = np.random.default_rng(seed + 100)
    for name in ("aux", "a1", "a3", "a5"):
        at = rng.random(n) < density
        ev[name][at] = rng.integers(1, 2**15, int(at.sum()))
    return ev


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.6])
def test_sparse_columns_select_like_a_structured_array(monkeypatch: pytest.MonkeyPatch, density: float) -> None:
    """Mostly-zero columns kept sparse give the same values, whole or selected, as the records."""
    monkeypatch.setattr(columns, "SPARSE_MIN_ROWS", 16)
    ev = sparse_records(5000, 7, density)
    cols = Columns.from_records(ev).sparse()
    kept = [name for name, col in cols.cols.items() if isinstance(col, Sparse)]
    assert set(kept) == ({"a2", "a4"} if density > 0.5 else set(columns.MOSTLY_ZERO))  # the filled ones stay whole
    rng = np.random.default_rng(8)
    assert np.array_equal(cols.to_records(), ev)
    for _ in range(60):
        mask = rng.random(len(ev)) < rng.random()
        assert np.array_equal(cols[mask].to_records(), ev[mask])
        assert np.array_equal(cols.where(mask).to_records(), ev[mask])
        idx = rng.integers(-len(ev), len(ev), int(rng.integers(0, 50)))  # unsorted, repeated, negative
        assert np.array_equal(cols[idx].to_records(), ev[idx])
        lo, hi, step = (int(x) for x in rng.integers(-6000, 6000, 3))
        key = slice(lo, hi, step or 1)
        assert np.array_equal(cols[key].to_records(), ev[key])
        i = int(rng.integers(-len(ev), len(ev)))
        assert all(cols[i][name] == ev[i][name] for name in columns.NAMES)
    for bad in (len(ev), np.array([3, len(ev)]), np.array([-len(ev) - 1])):
        with pytest.raises(IndexError):
            cols[bad]["a1"]


def test_sparse_columns_sort_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "SPARSE_MIN_ROWS", 16)
    ev = sparse_records(3000, 9, 0.01)
    ev["ts"][100:110] = ev["ts"][100:110][::-1].copy()  # a stretch out of order
    ev["ts"][2000], ev["ts"][2500] = ev["ts"][2500], ev["ts"][2000]
    want = ev[np.argsort(ev["ts"], kind="stable")]
    for max_runs in (0, 1024):
        got = Columns.from_records(ev).sparse().sort_by_time_in_place(max_runs=max_runs)
        assert np.array_equal(got.to_records(), want)
        assert isinstance(got.cols["a1"], Sparse)


def test_a_read_trace_keeps_allocator_arguments_sparse(tmp_path: Path) -> None:
    """Reading a trace keeps the mostly-zero columns sparse and every value as written."""
    from tracer.tracefile import TraceWriter, open_trace

    n = columns.SPARSE_MIN_ROWS * 2
    ev = sparse_records(n, 11, 0.002)
    ev["kind"] = np.where(ev["a0"] % 2, Kind.MALLOC, Kind.FREE)  # kinds a recording writes
    path = str(tmp_path / "t.trace")
    w = TraceWriter(path)
    w.start({"pid": 1, "command": ["x"]})
    for lo in range(0, n, 50_000):
        w.write(Columns.from_records(ev[lo : lo + 50_000]))
    w.close({"lost_total": 0})
    got = open_trace(path).columns
    assert all(isinstance(got.cols[name], Sparse) for name in columns.MOSTLY_ZERO)
    assert np.array_equal(got.to_records(), ev)
    assert got.nbytes < 0.6 * ev.nbytes
