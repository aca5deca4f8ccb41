"""The heap scan at many moments at once against the heap laid out plainly, one moment at a time."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.analysis import heapscan

PAGE = 4096
CACHED, FAST = 1, 2


def _plain(start, chunk, opened, until, closed, went, size, t, hi, own_end, end) -> dict[str, int]:  # noqa: ANN001
    """One moment, written the obvious way: the occupied chunks sorted, gaps between them."""
    occ = [i for i in range(len(start)) if opened[i] <= t < until[i] and start[i] + 16 < hi]
    occ.sort(key=lambda i: (start[i], opened[i]))
    f = dict.fromkeys(heapscan.FIGURES, 0)
    f["highest"], maxend, pieces, best = -1, own_end, [], -1
    for i in occ:
        s, e = int(start[i]), int(start[i] + chunk[i])
        gap = s - maxend
        if gap >= 32:
            f["runs"] += 1
            f["runs_bytes"] += gap
            f["largest_run"] = max(f["largest_run"], gap)
            pieces.append((maxend, s))
        elif gap > 0:
            f["absorbed"] += gap
        if closed[i] > t:
            f["live_requested"] += int(size[i])
            f["live_blocks"] += 1
            f["live_chunk_bytes"] += int(chunk[i])
            if e > best:
                best, f["highest"], f["highest_end"], f["highest_under"] = e, i, e, max(gap, 0)
        elif went[i] == FAST:
            f["fast_bytes"] += int(chunk[i])
            f["fast_chunks"] += 1
            pieces.append((s, e))
        elif went[i] == CACHED:
            f["cached_bytes"] += int(chunk[i])
            f["cached_chunks"] += 1
        maxend = max(maxend, e)
    f["top_from"] = maxend
    merged: list[list[int]] = []
    for s, e in pieces:
        if merged and merged[-1][1] == s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    top_start = min(end, maxend)
    if merged and merged[-1][1] == top_start:
        top_start = merged.pop()[0]
    for s, e in merged:
        aligned = (s + 48 + PAGE - 1) & ~(PAGE - 1)
        f["trim_pages"] += (e - aligned) & ~(PAGE - 1) if e > aligned else 0
    f["trim_top_start"] = top_start
    return f


@pytest.mark.parametrize("seed", range(8))
def test_scan_equals_the_plain_layout_at_every_moment(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    chunk = rng.choice([32, 48, 64, 128, 1040, 5000, 70000], n).astype(np.int64)
    gaps = rng.choice([0, 0, 0, 16, 32, 4096, 9000], n)
    start = 0x10000 + np.cumsum(np.r_[0, (chunk + gaps)[:-1]]).astype(np.int64)  # chunks never overlap
    opened = rng.integers(0, 1000, n).astype(np.int64)
    closed = np.where(rng.random(n) < 0.7, opened + rng.integers(1, 500, n), 1 << 62)
    went = rng.choice([0, CACHED, FAST], n).astype(np.int8)
    until = np.where(went == 0, closed, np.where(rng.random(n) < 0.5, closed + rng.integers(1, 300, n), 1 << 62))
    size = np.maximum(chunk - 16, 1)
    ts = np.unique(rng.integers(0, 1200, 40)).astype(np.int64)
    top = int(start[-1] + chunk[-1])
    hi = np.where(rng.random(len(ts)) < 0.3, int(start[n // 2]), top + 1).astype(np.int64)
    own_end = np.full(len(ts), 0x10000, dtype=np.int64)
    end = np.maximum(hi, top + 8192).astype(np.int64)
    got = heapscan.scan(start, chunk, opened, until, closed, went, size, ts, hi, own_end, end, PAGE, CACHED, FAST)
    for j, t in enumerate(ts.tolist()):
        want = _plain(start, chunk, opened, until, closed, went, size, t, hi[j], own_end[j], end[j])
        assert {k: int(v[j]) for k, v in got.items()} == want, t
    # the same chunks as rows of unordered per-block arrays, named by their rows in address order
    rows = rng.permutation(n).astype(np.int32)
    spread = [np.empty_like(a) for a in (chunk, opened, until, closed, went, size)]
    for a, b in zip(spread, (chunk, opened, until, closed, went, size), strict=True):
        a[rows] = b
    by_row = heapscan.scan(start, *spread[:4], spread[4], spread[5], ts, hi, own_end, end, PAGE, CACHED, FAST,
                           idx=rows)
    assert all(np.array_equal(by_row[k], got[k]) for k in got)
