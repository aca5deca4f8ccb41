"""smaps parsing and the split of resident memory by cause (pure parts)."""

from __future__ import annotations

import numpy as np

from tracer.analysis.heapscan import _inside
from tracer.analysis.residency import _overlap, _ranges, _subtract
from tracer.events import RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_OTHER, RESIDENT_STACK
from tracer.record.residency import is_heap, parse_smaps, present_runs

SMAPS = b"""55d0c1a00000-55d0c1a01000 r--p 00000000 fe:01 1234  /usr/bin/prog
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me dw sd
55d0c1a01000-55d0c1a02000 rw-p 00001000 fe:01 1234  /usr/bin/prog
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
55d0c2000000-55d0c2021000 rw-p 00000000 00:00 0      [heap]
Rss:                 132 kB
Anonymous:           132 kB
Swap:                  0 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 512 kB
Anonymous:           512 kB
Swap:                  8 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
Rss:                  16 kB
Anonymous:            16 kB
Swap:                  0 kB
"""


def test_parse_smaps_keeps_mappings_with_pages() -> None:
    rows = parse_smaps(SMAPS)
    assert rows == [
        (0x55D0C1A00000, 0x55D0C1A01000, 4096, 0, 0, RESIDENT_FILE),
        (0x55D0C1A01000, 0x55D0C1A02000, 4096, 4096, 0, RESIDENT_FILE),
        (0x55D0C2000000, 0x55D0C2021000, 132 << 10, 132 << 10, 0, RESIDENT_HEAP),
        (0x7F0000200000, 0x7F0000300000, 512 << 10, 512 << 10, 8 << 10, RESIDENT_OTHER),
        (0x7FFD00000000, 0x7FFD00021000, 16 << 10, 16 << 10, 0, RESIDENT_STACK),
    ]


def test_overlap_of_merged_ranges() -> None:
    r = _ranges(np.array([100, 150, 400]), np.array([200, 180, 500]))
    assert r[0].tolist() == [100, 400] and r[1].tolist() == [200, 500]
    lo, hi = np.array([0, 120, 190, 250, 0, 450]), np.array([50, 130, 420, 300, 1000, 460])
    assert _overlap(r, lo, hi).tolist() == [0, 10, 30, 0, 200, 10]
    assert _overlap(_ranges(np.array([], np.int64), np.array([], np.int64)), lo, hi).tolist() == [0] * 6


PRESENT = np.uint64(1 << 63)


def _brute(pages: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(pages)}


def test_present_runs_are_the_pages_in_ram() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        present = rng.random(int(rng.integers(1, 300))) < rng.random()
        entries = np.where(present, PRESENT | np.uint64(123), np.uint64(0)).astype(np.uint64)
        s, e = present_runs(entries, 0x10000, page=4096, limit=10_000)
        got = {p for a, b in zip(s.tolist(), e.tolist(), strict=True) for p in range((a - 0x10000) // 4096,
                                                                                   (b - 0x10000) // 4096)}
        assert got == _brute(present)
        assert (s[1:] > e[:-1]).all()  # disjoint, not touching


def test_present_runs_past_the_limit_only_overstate() -> None:
    present = np.tile([True, False], 50)  # 50 runs
    present[40:60] = False  # one wide gap
    entries = np.where(present, PRESENT, np.uint64(0)).astype(np.uint64)
    s, e = present_runs(entries, 0, page=1, limit=3)
    assert len(s) == 3
    covered = {p for a, b in zip(s.tolist(), e.tolist(), strict=True) for p in range(a, b)}
    assert _brute(present) <= covered  # every page in RAM is still in a run
    assert not covered & set(range(41, 60))  # the widest gap stays a gap


def test_is_heap_reads_the_heap_and_arena_shaped_mappings() -> None:
    assert is_heap(0x55d0c2000000, 0x55d0c2021000, RESIDENT_HEAP)
    assert is_heap(0x7f0004000000, 0x7f0008000000, RESIDENT_OTHER)  # a thread arena's 64 MiB heap
    assert not is_heap(0x7f0004001000, 0x7f0004100000, RESIDENT_OTHER)  # not on a 64 MiB boundary
    assert not is_heap(0x7f0004000000, 0x7f0004000000 + (65 << 20), RESIDENT_OTHER)
    assert not is_heap(0x7f0004000000, 0x7f0004100000, RESIDENT_FILE)


def _set(starts, ends) -> set[int]:  # noqa: ANN001
    return {x for a, b in zip(list(starts), list(ends), strict=True) for x in range(int(a), int(b))}


def test_subtract_is_set_difference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        def ranges(n: int) -> tuple[np.ndarray, np.ndarray]:
            s = rng.integers(0, 200, n)
            return s.astype(np.int64), (s + rng.integers(0, 30, n)).astype(np.int64)
        a, b = ranges(int(rng.integers(0, 6))), ranges(int(rng.integers(0, 6)))
        s, e = _subtract(a, b)
        assert _set(s, e) == _set(*a) - _set(*b)
        assert (e > s).all() and (s[1:] > e[:-1]).all()


def test_inside_counts_the_bytes_of_ranges_in_a_window() -> None:
    s = np.array([10, 50, 100, 5, 20], dtype=np.int64)  # two moments: ranges 0:3 and 3:5
    e = np.array([20, 60, 140, 8, 30], dtype=np.int64)
    cum = np.r_[0, np.cumsum(e - s)].astype(np.int64)
    for a in range(0, 150, 3):
        for b in range(a, 160, 7):
            want0 = len(_set(s[:3], e[:3]) & set(range(a, b)))
            want1 = len(_set(s[3:], e[3:]) & set(range(a, b)))
            assert _inside(a, b, s, e, cum, 0, 3) == want0
            assert _inside(a, b, s, e, cum, 3, 5) == want1


def test_absent_is_extent_less_present_less_what_was_allocated_since(monkeypatch) -> None:  # noqa: ANN001
    from tracer.analysis import residency as rs

    smp = {"ts": np.array([100, 100, 100, 200, 200], dtype=np.int64),
           "start": np.array([0, 0, 0x3000, 0, 0], dtype=np.int64),
           "end": np.array([0x10000, 0x1000, 0x4000, 0x10000, 0x10000], dtype=np.int64),
           "present": np.array([False, True, True, False, True])}
    monkeypatch.setattr(rs, "page_samples", lambda trace, pid: smp)
    allocated = {(100, 200): (np.array([0x6000]), np.array([0x8000]))}

    def touched(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return allocated.get((a, b), (np.zeros(0, np.int64), np.zeros(0, np.int64)))

    gone = rs.absent(None, 1, np.array([50, 100, 150, 250]), touched)
    # before any sample nothing is known; at 100 and 150: 0x1000-0x3000, 0x4000-0x10000 less the block
    assert [gone.bytes_in(0, 0, 1 << 20)] == [0]
    for j in (1, 2):
        assert gone.bytes_in(j, 0, 1 << 20) == 0x2000 + 0xC000 - 0x2000
        assert gone.bytes_in(j, 0x5000, 0x7000) == 0x1000
    assert gone.bytes_in(3, 0, 1 << 20) == 0  # the second sample found it all in RAM
