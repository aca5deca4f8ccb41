"""Where the target's pages are: /proc/PID/smaps and the heaps' pagemap sampled while recording.

rss_stat gives the process's resident anonymous bytes, not where they are. Every ``INTERVAL_S``
(and once at the start) the sampler reads the smaps of the traced process through a task that
runs, and writes one RESIDENT record per mapping that holds pages (start, end, Rss, Anonymous,
Swap, and whether it is the heap, the main stack or a file), all with the time of the read: the
accounting splits resident memory by cause from the latest sample (tracer/analysis/residency.py).
With the same time, PAGES records say which pages of the heaps are in RAM: the ``[heap]`` and
every anonymous mapping laid out as glibc lays out a thread-arena heap (starting on a 64 MiB
boundary, at most 64 MiB long) are read from /proc/PID/pagemap, 8 bytes a page, and written as
runs of present pages (what ``malloc_trim`` can give back is only what is in RAM). A heap with more
than ``MAX_RUNS`` runs has its shortest gaps counted as present, which can only overstate residency.
A read costs about 1 ms per 100 mappings; a sample that took longer than a tenth of the interval
makes the next one wait proportionally longer.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tracer import events as ev
from tracer.columns import Columns
from tracer.errors import HeaplineError
from tracer.events import RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_OTHER, RESIDENT_STACK, Kind, from_rows
from tracer.record import procfs

INTERVAL_S = 0.25
ARENA_HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: thread-arena heaps are aligned to it
MAX_RUNS = 4096  # present runs written per heap and sample
PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = np.uint64(1 << 63)
_KB_FIELDS = {b"Rss:": 0, b"Anonymous:": 1, b"Swap:": 2}


def parse_smaps(raw: bytes) -> list[tuple[int, int, int, int, int, int]]:
    """(start, end, rss, anonymous, swap, what) of every mapping of ``raw`` that holds pages."""
    out = []
    cur: list[int] | None = None
    for line in raw.split(b"\n"):
        if not line:
            continue
        head = line.split(None, 1)[0]
        if head in _KB_FIELDS:
            if cur is not None:
                cur[2 + _KB_FIELDS[head]] = int(line.split()[1]) * 1024
            continue
        if head[-1:] == b":" or b"-" not in head:  # another field (Pss:, VmFlags: ...)
            continue
        if cur is not None and (cur[2] or cur[4]):
            out.append(tuple(cur))
        parts = line.split(None, 5)
        lo, _, hi = parts[0].partition(b"-")
        path = parts[5].strip() if len(parts) > 5 else b""
        inode = parts[4] if len(parts) > 4 else b"0"
        what = (RESIDENT_HEAP if path == b"[heap]" else RESIDENT_STACK if path == b"[stack]"
                else RESIDENT_FILE if inode != b"0" else RESIDENT_OTHER)
        cur = [int(lo, 16), int(hi, 16), 0, 0, 0, what]
    if cur is not None and (cur[2] or cur[4]):
        out.append(tuple(cur))
    return out  # type: ignore[return-value]


def is_heap(lo: int, hi: int, what: int) -> bool:
    """A mapping whose pages the sampler reads: the [heap], or one laid out as a thread-arena heap."""
    return what == RESIDENT_HEAP or (what == RESIDENT_OTHER and lo % ARENA_HEAP == 0 and hi - lo <= ARENA_HEAP)


def present_runs(entries: np.ndarray, lo: int, page: int = PAGE,
                 limit: int = MAX_RUNS) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of pages in RAM among pagemap ``entries`` (one uint64 a page from
    address ``lo``); past ``limit`` runs the shortest gaps between them are closed."""
    present = (entries & _PRESENT) != 0
    edges = np.diff(np.r_[np.int8(0), present.astype(np.int8), np.int8(0)])
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # pages [first, last)
    if len(first) > limit:
        gaps = first[1:] - last[:-1]
        keep = np.sort(np.argsort(gaps, kind="stable")[len(gaps) - (limit - 1):])  # the widest gaps stay
        first, last = np.r_[first[0], first[1:][keep]], np.r_[last[:-1][keep], last[-1]]
    return lo + first.astype(np.int64) * page, lo + last.astype(np.int64) * page


def read_pages(task: int, heaps: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(start, end, aux, what) PAGES rows of the heaps (lo, hi, what) of ``task``: each mapping read,
    then its runs of pages in RAM. A mapping gone since smaps was read is left out."""
    rows: list[tuple[int, int, int, int]] = []
    with open(f"/proc/{task}/pagemap", "rb", buffering=0) as f:
        for lo, hi, what in heaps:
            f.seek(lo // PAGE * 8)
            raw = f.read((hi - lo) // PAGE * 8)
            if len(raw) != (hi - lo) // PAGE * 8:
                continue
            starts, ends = present_runs(np.frombuffer(raw, dtype=np.uint64), lo)
            rows.append((lo, hi, ev.PAGES_EXTENT, what))
            rows += [(s, e, ev.PAGES_PRESENT, what) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    return rows


class ResidencySampler:
    """Samples the smaps of process ``pid`` at most every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float = INTERVAL_S) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.next_at = 0.0
        self.samples = 0
        self.gone = False

    def sample(self) -> Columns:
        """A sample now if one is due (else none): RESIDENT and PAGES events, possibly empty."""
        now = time.monotonic()
        if self.gone or now < self.next_at:
            return Columns.empty()
        try:
            task = procfs.live_task(self.pid)
            ts = procfs.time_ns()
            with open(f"/proc/{task}/smaps", "rb") as f:
                raw = f.read()
            maps = parse_smaps(raw)
        except (OSError, procfs.ProcessGone, HeaplineError):
            self.gone = True  # it exited (or is not ours to read): nothing more to sample
            return Columns.empty()
        try:
            pages = read_pages(task, [(lo, hi, what) for lo, hi, _, anon, _, what in maps
                                      if anon and is_heap(lo, hi, what)])
        except OSError:  # pagemap is not readable here (or it exited since): smaps alone
            pages = []
        took = time.monotonic() - now
        self.next_at = now + max(self.interval_s, 10 * took)
        rows = [(ts, 0, self.pid, self.pid, int(Kind.RESIDENT), what, 0, lo, hi, rss, anon, swap, 0, 0)
                for lo, hi, rss, anon, swap, what in maps]
        rows += [(ts, 0, self.pid, self.pid, int(Kind.PAGES), aux, 0, lo, hi, what, 0, 0, 0, 0)
                 for lo, hi, aux, what in pages]
        if not rows:
            return Columns.empty()
        self.samples += 1
        return Columns.from_records(from_rows(rows))
