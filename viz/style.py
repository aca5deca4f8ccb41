"""One palette for every panel (a series keeps its colour in each), readable on light and dark pages."""

from __future__ import annotations

from typing import Any

import numpy as np

HEAP = "#4c78a8"  # the break and the heap band
ANON = "#2a9d8f"  # anonymous mappings (mmap)
ARENA = "#7cb9a8"  # glibc's thread-arena heaps (anonymous, reserved 64 MiB at a time)
FOOTPRINT = "#9467bd"  # heap + anonymous mappings
LIVE = "#59a14f"  # bytes the program holds (requested, not freed)
RSS = "#f28e2b"  # resident anonymous memory
RELEASE = "#e15759"  # memory given back to the kernel
ALLOCATOR = "#b07aa1"  # malloc_trim, mallopt
FILE = "#9c9c9c"  # file mappings
STACK = "#bab0ac"
PROTECT = "#edc948"  # mprotect
FINDING = "#d62728"
MMAPPED = ANON  # blocks malloc mapped one by one
OWN = "#76b7b2"  # anonymous mappings the allocator did not make: the program's own, its runtime's
PIN = FINDING  # the live block that pins the break
FREE_RUN = "#ff9da7"  # free chunks in glibc's bins, under the break

#: compare: one colour per trace
SEQUENCE = ("#4c78a8", "#f28e2b", "#59a14f", "#e15759", "#9467bd", "#2a9d8f", "#b07aa1", "#9c755f", "#edc948",
            "#76b7b2")


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def seconds(ts: np.ndarray | int, t0: int) -> np.ndarray:
    """Trace-clock ns -> float seconds since the start (what the time axes show)."""
    return (np.asarray(ts, dtype=np.int64) - np.int64(t0)).astype(np.float64) / 1e9


def axis(**kw: Any) -> dict[str, Any]:
    """A plain axis: no zero line, thin grid (its colours follow the page theme in the browser). Fixed margins:
    automargin makes plotly lay the figure out again and again."""
    return {"showline": True, "zeroline": False, "ticks": "outside", "ticklen": 3, **kw}
