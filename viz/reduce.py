"""Per-pixel reduction of long series and of many markers, keeping every extreme and every release.

Series (a value carried forward from each row to the next, drawn as steps) are first cut to the
rows where they change; when more remain than the drawing budget, each of ``buckets`` equal
slices of the time axis keeps its first, last, lowest and highest row (M4 aggregation): the
drawn line then has exactly the extent it would have with every row, at every pixel, and every
peak sits at its true time and value. Markers (calls, releases) are kept one per kind and time
slice when there are too many; the one kept is the largest of its slice and carries how many
it stands for and their total bytes, so every slice that had a release still shows one.

Only numpy; no Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: slices of the time axis a reduced series is cut into (about one per pixel column)
BUCKETS = 2000
#: slices for markers, which are several pixels wide
MARKER_BUCKETS = 1000


def _bucket(ts: np.ndarray, t0: int, span: int, buckets: int) -> np.ndarray:
    span = max(int(span), 1)
    b = (ts.astype(np.int64) - np.int64(t0)) * buckets // span
    return np.clip(b, 0, buckets - 1)


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in a sorted (or grouped) array."""
    if not len(keys):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))


def changes(values: np.ndarray) -> np.ndarray:
    """Rows where a carried-forward series takes a new value (the first row always counts)."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))


def extrema_rows(ts: np.ndarray, values: np.ndarray, t0: int, span: int, buckets: int = BUCKETS) -> np.ndarray:
    """First, last, lowest and highest row of each time slice (``ts`` ascending), as sorted row indices."""
    n = len(ts)
    if n <= 4 * buckets:
        return np.arange(n)
    b = _bucket(ts, t0, span, buckets)
    starts = run_starts(b)
    last = np.concatenate([starts[1:], [n]]) - 1
    slot = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [n]])))
    keep = [starts, last]
    for reduce in (np.minimum, np.maximum):
        ext = reduce.reduceat(values, starts)
        hit = np.flatnonzero(values == ext[slot])
        keep.append(hit[run_starts(slot[hit])])  # the first row reaching the extreme in each slice
    return np.unique(np.concatenate(keep))


def step_rows(ts: np.ndarray, columns: list[np.ndarray], t0: int, span: int,
              budget: int = 4 * BUCKETS, buckets: int = BUCKETS) -> tuple[np.ndarray, bool]:
    """Rows of a frame of step series to draw: every change of a series that has few, the extrema
    per slice of one that has many. Returns sorted row indices and whether any series was reduced."""
    n = len(ts)
    if n == 0:
        return np.empty(0, dtype=np.int64), False
    keep = [np.array([0, n - 1])]
    reduced = False
    for values in columns:
        rows = changes(values)
        if len(rows) > budget:
            reduced = True
            sub = extrema_rows(ts[rows], values[rows], t0, span, buckets)
            rows = rows[sub]
        keep.append(rows)
    rows = np.concatenate(keep)
    rows.sort()
    return rows[run_starts(rows)], reduced


@dataclass
class Kept:
    """Markers kept after reduction: which rows, and what each stands for."""

    rows: np.ndarray  # indices into the input, time order
    count: np.ndarray  # how many input rows each kept row stands for (1 = itself)
    total: np.ndarray  # sum of the weight over them
    reduced: bool


def representatives(ts: np.ndarray, weight: np.ndarray, group: np.ndarray, t0: int, span: int,
                    limit: int, buckets: int = MARKER_BUCKETS) -> Kept:
    """Every row when there are at most ``limit``; otherwise, per group and time slice, the row
    with the largest ``|weight|``, with the count and summed weight of its slice."""
    n = len(ts)
    w = weight.astype(np.int64)
    if n <= limit:
        return Kept(np.arange(n), np.ones(n, dtype=np.int64), w, False)
    key = group.astype(np.int64) * buckets + _bucket(ts, t0, span, buckets)
    order = np.lexsort((-np.abs(w), key))
    starts = run_starts(key[order])
    bounds = np.concatenate([starts, [n]])
    rows = order[starts]
    count = np.diff(bounds)
    total = np.add.reduceat(w[order], starts)
    by_time = np.argsort(ts[rows], kind="stable")
    return Kept(rows[by_time], count[by_time], total[by_time], True)
