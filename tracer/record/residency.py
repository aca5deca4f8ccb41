"""Where the target's pages are: /proc/PID/smaps sampled while recording, as RESIDENT events.

rss_stat gives the process's resident anonymous bytes, not where they are. Every ``INTERVAL_S``
(and once at the start) the sampler reads the smaps of the traced process through a task that
runs, and writes one RESIDENT record per mapping that holds pages (start, end, Rss, Anonymous,
Swap, and whether it is the heap, the main stack or a file), all with the time of the read: the
accounting splits resident memory by cause from the latest sample (tracer/analysis/residency.py).
A read costs about 1 ms per 100 mappings; a sample that took longer than a tenth of the interval
makes the next one wait proportionally longer.
"""

from __future__ import annotations

import time

from tracer.columns import Columns
from tracer.errors import HeaplineError
from tracer.events import RESIDENT_FILE, RESIDENT_HEAP, RESIDENT_OTHER, RESIDENT_STACK, Kind, from_rows
from tracer.record import procfs

INTERVAL_S = 0.25
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


class ResidencySampler:
    """Samples the smaps of process ``pid`` at most every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float = INTERVAL_S) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.next_at = 0.0
        self.samples = 0
        self.gone = False

    def sample(self) -> Columns:
        """A sample now if one is due (else none): RESIDENT events, possibly empty."""
        now = time.monotonic()
        if self.gone or now < self.next_at:
            return Columns.empty()
        try:
            task = procfs.live_task(self.pid)
            ts = procfs.time_ns()
            with open(f"/proc/{task}/smaps", "rb") as f:
                raw = f.read()
        except (OSError, procfs.ProcessGone, HeaplineError):
            self.gone = True  # it exited (or is not ours to read): nothing more to sample
            return Columns.empty()
        took = time.monotonic() - now
        self.next_at = now + max(self.interval_s, 10 * took)
        rows = [(ts, 0, self.pid, self.pid, int(Kind.RESIDENT), what, 0, lo, hi, rss, anon, swap, 0, 0)
                for lo, hi, rss, anon, swap, what in parse_smaps(raw)]
        if not rows:
            return Columns.empty()
        self.samples += 1
        return Columns.from_records(from_rows(rows))
