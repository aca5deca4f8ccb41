"""smaps parsing and the split of resident memory by cause (pure parts)."""

from __future__ import annotations

import numpy as np

from tracer.analysis.residency import _overlap, _ranges
from tracer.events import RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_OTHER, RESIDENT_STACK
from tracer.record.residency import parse_smaps

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
