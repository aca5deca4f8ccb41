"""What the loaded probes hand to user space: their three rings, the allocator records still in the
per-CPU batches, the latest RSS the kernel held back, and the loss counters.

The events ring carries syscall, process and RSS records; the spare ring what the events ring
refused (another lock, see docs/DEVELOPING.md); the allocator ring whole batches of allocator
records. :class:`Rings` drains all three with numpy (ringbuf.py), reads the batches left once no
probe runs, and counts what was lost, per CPU and per reason, from the probes' ``lost`` table and
the kernel's ``recursion_misses`` of each program.
"""

from __future__ import annotations

import ctypes as ct
import mmap
from typing import Any

import numpy as np

from tracer.columns import Columns
from tracer.events import EVENT_DTYPE, Kind
from tracer.record.backends.bpf import abi
from tracer.record.backends.bpf.abi import BATCH_DTYPE, LOST_REASONS
from tracer.record.backends.bpf.ringbuf import RingReader, batch_events

UNKNOWN_CPU = -1  # lost() key for losses the kernel does not attribute to a CPU


class Rings:
    def __init__(self, bpf: Any, ring_pages: int, spare_pages: int, batches: bool) -> None:
        self.bpf = bpf
        page = mmap.PAGESIZE
        self.events = RingReader(bpf["events"].map_fd, ring_pages * page, EVENT_DTYPE)
        self.spare = RingReader(bpf["spare"].map_fd, spare_pages * page, EVENT_DTYPE)
        self.batches = RingReader(bpf["alloc_ring"].map_fd, ring_pages * page, BATCH_DTYPE, batch=True) \
            if batches else None
        self._rss_seen: dict[int, int] = {}

    def drain(self) -> tuple[Columns, Columns, Columns]:
        """What the events ring, the spare ring and the allocator ring hold now (the allocator's
        records never carry an exec: callers watching for execs look at the first two)."""
        batches = self.batches.drain() if self.batches is not None else Columns.empty()
        return self.events.drain(), self.spare.drain(), batches

    def trailing_rss(self) -> np.ndarray:
        """The latest RSS of each traced address space when the kernel held it back (rate limit)."""
        rows = []
        for key, st in self.bpf["rss_state"].items():
            if st.last_update <= st.last_emit or self._rss_seen.get(key.value, 0) >= st.last_update:
                continue
            self._rss_seen[key.value] = st.last_update
            b = st.bytes
            rss = (b[abi.MM_ANON], b[abi.MM_FILE], b[abi.MM_SHMEM], b[abi.MM_SWAP])  # a0..a3 of an RSS record
            rows.append((st.last_update, 0, st.pid, st.pid, int(Kind.RSS), 1, 0, *rss, st.anon_max, 0, 0))
        return np.array(rows, dtype=EVENT_DTYPE) if rows else np.empty(0, dtype=EVENT_DTYPE)

    def batch_leftovers(self, clear: bool = False) -> Columns:
        """The allocator records still in the CPUs' batches (read once no probe runs), then emptied.
        A batch's count covers only records completely written, so what it counts is whole."""
        table = self.bpf["alloc_batch"]
        raw = b"".join(bytes(v) for v in table[ct.c_int(0)])
        if clear:
            table.clear()
        return batch_events(np.frombuffer(raw, dtype=BATCH_DTYPE))

    def discard(self) -> None:
        """Drop everything the rings and the batches hold (records of heapline's own calibration)."""
        self.drain()
        if self.batches is not None:
            self.batch_leftovers(clear=True)

    def close(self) -> None:
        for r in (self.events, self.spare, self.batches):
            if r is not None:
                r.close()

    # -- losses ------------------------------------------------------------------------------

    def lost_table(self) -> list[list[int]]:
        """lost[counter][cpu] (abi.LOST_REASONS, then SPARE_USED and BATCH_BUSY)."""
        table = self.bpf["lost"]
        return [[int(v) for v in table[ct.c_int(r)]] for r in range(abi.LOST_COUNTERS)]

    def skipped(self) -> int:
        """Times the kernel did not run one of our probes (another BPF program was running on that
        CPU: ``recursion_misses`` of each program). Each is an event that was never recorded."""
        total = 0
        for fn in self.bpf.funcs.values():
            try:
                with open(f"/proc/self/fdinfo/{fn.fd}") as f:
                    for line in f:
                        if line.startswith("recursion_misses:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    def lost(self) -> dict[int, int]:
        """Records lost so far, per CPU (UNKNOWN_CPU: probes the kernel skipped)."""
        per_cpu: dict[int, int] = {}
        for row in self.lost_table()[: len(LOST_REASONS)]:
            for cpu, v in enumerate(row):
                if v:
                    per_cpu[cpu] = per_cpu.get(cpu, 0) + v
        skipped = self.skipped()
        if skipped:
            per_cpu[UNKNOWN_CPU] = skipped
        return per_cpu

    def details(self) -> dict[str, Any]:
        """The loss counters by reason, and the records that took the spare ring or went unbatched."""
        table = self.lost_table()
        return {
            "lost_by_reason": {**{name: sum(row) for name, row in zip(LOST_REASONS, table, strict=False)},
                               "probe_skipped": self.skipped()},
            "spare_ring_records": sum(table[abi.SPARE_USED]),
            "unbatched_alloc_records": sum(table[abi.BATCH_BUSY]),
        }
