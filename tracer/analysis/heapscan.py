"""One glibc heap laid out chunk by chunk at many moments at once.

At a moment ``t`` a chunk is occupied when its block was opened at or before ``t`` and stays
occupied (live, in a tcache or in a fastbin: :mod:`tracer.analysis.chunks`) after it. Walking the
heap's chunks in address order, the space between one occupied chunk's end and the next one's
start is a free chunk in glibc's bins (a gap under 32 bytes is an exhausted remainder, part of the
chunk below); above the highest occupied chunk is the top. :func:`scan` does that walk for every
moment in one pass over the chunks: each chunk is visited only at the moments it is occupied
(found by binary search), so the cost is the number of (chunk, moment) pairs that are occupied,
not chunks x moments. It also reads off what ``malloc_trim(0)`` would give back (glibc's mtrim:
after consolidating the fastbins, the whole pages of each free chunk past its first 48 bytes,
neighbours merged; ``systrim`` of the main heap's top), less the pages known not to be in RAM
(``absent``: sorted, disjoint ranges per moment, from the recorder's pagemap samples).
"""

from __future__ import annotations

import numpy as np
from numba import njit

HEADER = 16
MINSIZE = 32
MALLOC_CHUNK_STRUCT = 48

#: the figures per moment, columns of :func:`scan`'s result
FIGURES = ("top_from", "runs", "runs_bytes", "largest_run", "absorbed", "fast_bytes", "fast_chunks",
           "cached_bytes", "cached_chunks", "live_requested", "live_blocks", "live_chunk_bytes", "highest",
           "highest_end", "highest_under", "trim_pages", "trim_top_start")
_F = {name: i for i, name in enumerate(FIGURES)}


@njit(cache=True, nogil=True)
def _scan(start: np.ndarray, idx: np.ndarray, chunk: np.ndarray, opened: np.ndarray, until: np.ndarray,
          closed: np.ndarray, went: np.ndarray, size: np.ndarray, ts: np.ndarray, hi: np.ndarray, own_end: np.ndarray,
          heap_end: np.ndarray, page: int, cached_code: int, fast_code: int, ab_s: np.ndarray, ab_e: np.ndarray,
          ab_cum: np.ndarray, ab_lo: np.ndarray, ab_hi: np.ndarray) -> np.ndarray:  # pragma: no cover
    m = len(ts)
    ab = (ab_s, ab_e, ab_cum)
    out = np.zeros((m, 17), dtype=np.int64)
    maxend = own_end.copy()
    cur_s = np.full(m, -1, dtype=np.int64)  # the free piece being merged (for malloc_trim)
    cur_e = np.full(m, -1, dtype=np.int64)
    out[:, 12] = -1
    mask = ~(page - 1)
    for i in range(len(start)):
        k = idx[i]  # the chunk's row in the per-block arrays
        s = start[i]
        e = s + chunk[k]
        j = np.searchsorted(ts, opened[k])  # the first moment at or after it was opened
        while j < m and ts[j] < until[k]:
            if s + HEADER >= hi[j]:
                j += 1
                continue
            gap = s - maxend[j]
            if gap >= MINSIZE:
                out[j, 1] += 1
                out[j, 2] += gap
                if gap > out[j, 3]:
                    out[j, 3] = gap
                ps = maxend[j]
                if cur_e[j] == ps:
                    cur_e[j] = s
                else:
                    if cur_s[j] >= 0:
                        out[j, 15] += _pages(cur_s[j], cur_e[j], page, mask, ab, ab_lo[j], ab_hi[j])
                    cur_s[j], cur_e[j] = ps, s
            elif gap > 0:
                out[j, 4] += gap
            live = closed[k] > ts[j]
            if live:
                out[j, 9] += size[k]
                out[j, 10] += 1
                out[j, 11] += chunk[k]
                if e > out[j, 13]:
                    out[j, 12] = i
                    out[j, 13] = e
                    out[j, 14] = gap if gap > 0 else 0
            elif went[k] == fast_code:
                out[j, 5] += chunk[k]
                out[j, 6] += 1
                if cur_e[j] == s:
                    cur_e[j] = e
                else:
                    if cur_s[j] >= 0:
                        out[j, 15] += _pages(cur_s[j], cur_e[j], page, mask, ab, ab_lo[j], ab_hi[j])
                    cur_s[j], cur_e[j] = s, e
            elif went[k] == cached_code:
                out[j, 7] += chunk[k]
                out[j, 8] += 1
            if e > maxend[j]:
                maxend[j] = e
            j += 1
    for j in range(m):
        out[j, 0] = maxend[j]
        top_start = heap_end[j] if heap_end[j] < maxend[j] else maxend[j]
        if cur_s[j] >= 0:
            if cur_e[j] == top_start:  # a free piece touching the top merges with it
                top_start = cur_s[j]
            else:
                out[j, 15] += _pages(cur_s[j], cur_e[j], page, mask, ab, ab_lo[j], ab_hi[j])
        out[j, 16] = top_start
    return out


@njit(cache=True, inline="always")
def _pages(s: int, e: int, page: int, mask: int, ab: tuple[np.ndarray, np.ndarray, np.ndarray],
           lo: int, hi: int) -> int:  # pragma: no cover - compiled
    """The bytes malloc_trim would madvise in the free chunk [s, e): its whole pages past its first
    48 bytes, less those of the ranges ``lo:hi`` of ``ab`` (starts, ends, prefix sums: not in RAM)."""
    aligned = (s + MALLOC_CHUNK_STRUCT + page - 1) & mask
    if e <= aligned:
        return 0
    stop = aligned + ((e - aligned) & mask)
    return (stop - aligned) - _inside(aligned, stop, ab[0], ab[1], ab[2], lo, hi)


@njit(cache=True)
def _inside(a: int, b: int, s: np.ndarray, e: np.ndarray, cum: np.ndarray, lo: int, hi: int) -> int:  # pragma: no cover
    """Bytes of the sorted, disjoint ranges ``s[lo:hi]``..``e[lo:hi]`` inside [a, b) (``cum``: prefix
    sums of their lengths over the whole arrays)."""
    if b <= a or hi <= lo:
        return 0
    i = lo + np.searchsorted(e[lo:hi], a, side="right")  # the first range ending after a
    k = lo + np.searchsorted(s[lo:hi], b, side="left")  # ranges starting before b end here
    if k <= i:
        return 0
    total = cum[k] - cum[i]
    if a > s[i]:
        total -= a - s[i]
    if e[k - 1] > b:
        total -= e[k - 1] - b
    return total


def scan(start: np.ndarray, chunk: np.ndarray, opened: np.ndarray, until: np.ndarray, closed: np.ndarray,
         went: np.ndarray, size: np.ndarray, ts: np.ndarray, hi: np.ndarray, own_end: np.ndarray,
         heap_end: np.ndarray, page: int, cached_code: int, fast_code: int,
         absent: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
         idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The figures of one heap at the moments ``ts`` (ascending): its chunks ``start`` (ascending),
    ``chunk`` bytes, ``opened``/``until``/``closed`` times, ``went`` and requested ``size`` (the
    chunk at ``start[i]`` is row ``idx[i]`` of those, ``i`` without ``idx``: no gathered copies); per
    moment, chunks whose pointer is at or above ``hi`` are not in it (the main heap ends at the
    break), glibc's own chunks end at ``own_end`` and the heap at ``heap_end``. ``absent``: (starts,
    ends, prefix sums, and per moment the first and past-last index) of pages not in RAM."""
    if absent is None:
        z = np.zeros(0, dtype=np.int64)
        absent = (z, z, np.zeros(1, dtype=np.int64), np.zeros(len(ts), np.int64), np.zeros(len(ts), np.int64))
    out = _scan(start, _rows(start, idx), chunk, opened, until, closed, went, size, ts, hi, own_end, heap_end,
                page, cached_code, fast_code, *absent)
    return {name: out[:, i] for name, i in _F.items()}


@njit(cache=True, nogil=True)
def _runs(start: np.ndarray, idx: np.ndarray, chunk: np.ndarray, opened: np.ndarray, until: np.ndarray, t: int,
          hi: int, own_end: int) -> np.ndarray:  # pragma: no cover - compiled
    out = np.zeros((len(start) + 1, 2), dtype=np.int64)
    n = 0
    maxend = own_end
    for i in range(len(start)):
        k = idx[i]
        s = start[i]
        if opened[k] > t or until[k] <= t or s + HEADER >= hi:
            continue
        if s - maxend >= MINSIZE:
            out[n, 0], out[n, 1] = maxend, s
            n += 1
        if s + chunk[k] > maxend:
            maxend = s + chunk[k]
    return out[:n]


def free_runs(start: np.ndarray, chunk: np.ndarray, opened: np.ndarray, until: np.ndarray, t: int, hi: int,
              own_end: int, idx: np.ndarray | None = None) -> np.ndarray:
    """The free chunks in the bins of one heap at moment ``t``, as (start, end) rows in address
    order: the same walk as :func:`scan` (gaps of at least MINSIZE between occupied chunks), listed
    instead of summed."""
    return _runs(start, _rows(start, idx), chunk, opened, until, int(t), int(hi), int(own_end))


def _rows(start: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    return np.arange(len(start), dtype=np.int32) if idx is None else idx  # any integer type: compiled per type
