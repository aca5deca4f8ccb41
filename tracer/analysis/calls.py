"""What each memory call of a process did: the bytes it moved (+ grew, - gave back), whether it grew
the process, gave memory back or neither, whether it failed, and the break after it.

The figures come from the call's own arguments (page rounded as the kernel rounds them) and, for
``malloc_trim``, from the releases the timeline found inside the call (its madvise, munmap and brk
calls): :class:`Calls` is what the report's event lane draws and what its hover texts say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracer import fields as ef
from tracer.analysis.allocmodel import since_last_exec
from tracer.analysis.model import Timeline
from tracer.columns import Events
from tracer.decode import RELEASE_ADVICE
from tracer.events import Kind

#: the calls :func:`effects` describes: the memory syscalls, malloc_trim and mallopt
CALL_KINDS: tuple[Kind, ...] = (Kind.BRK, Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MADVISE, Kind.MPROTECT,
                                Kind.MALLOC_TRIM, Kind.MALLOPT)
GREW, GAVE_BACK, NEITHER = 1, -1, 0


@dataclass
class Calls:
    """Calls with what each did: signed bytes, effect, failure, break after."""

    ev: Events
    moved: np.ndarray  # int64: bytes, signed (+ grew, - gave back)
    effect: np.ndarray  # int8: GREW, GAVE_BACK or NEITHER
    failed: np.ndarray  # bool: a syscall that returned -errno (it changed nothing)
    brk_after: np.ndarray  # int64, 0 when no break is known yet


def segment(events: Events, pid: int) -> Events:
    """The events of ``pid`` from its last execve on: the address space its timeline describes."""
    mine = events["pid"] == pid
    return since_last_exec(events if mine.all() else events[mine])


def effects(seg: Events, tl: Timeline, page: int) -> Calls:
    """The calls among ``seg`` (the events of the address space ``tl`` describes, see :func:`segment`)."""
    k = seg["kind"]
    ev = seg[((k >= Kind.BRK) & (k <= Kind.MPROTECT)) | (k == Kind.MALLOC_TRIM) | (k == Kind.MALLOPT)]
    k = ev["kind"]
    failed = ~ef.ok(ev) & (k < Kind.MALLOC)
    moved = np.zeros(len(ev), dtype=np.int64)
    effect = np.zeros(len(ev), dtype=np.int8)

    def pages(col: np.ndarray) -> np.ndarray:
        return ef.page_up(col, page).astype(np.int64)

    b = np.flatnonzero(k == Kind.BRK)
    rets = ef.brk.result(ev)[b].astype(np.int64)
    first = int(tl.breaks["brk"].iloc[0]) if len(tl.breaks) else (int(rets[0]) if len(rets) else 0)
    prev = np.concatenate([[first], rets[:-1]]) if len(rets) else rets
    moved[b] = rets - prev
    m = k == Kind.MMAP
    moved[m] = pages(ef.mmap.length(ev)[m])
    m = k == Kind.MUNMAP
    moved[m] = -pages(ef.munmap.length(ev)[m])
    m = k == Kind.MREMAP
    moved[m] = pages(ef.mremap.new_length(ev)[m]) - pages(ef.mremap.old_length(ev)[m])
    m = (k == Kind.MADVISE) | (k == Kind.MPROTECT)
    moved[m] = pages(ef.madvise.length(ev)[m])  # mprotect's length is the same argument
    releasing = (k == Kind.MADVISE) & np.isin(ef.madvise.advice(ev), np.array(sorted(RELEASE_ADVICE), np.uint64))
    moved[releasing] *= -1
    trims = np.flatnonzero(k == Kind.MALLOC_TRIM)
    if len(trims) and len(tl.releases):
        rts = tl.releases["ts"].to_numpy()
        cum = np.concatenate([[0], np.cumsum(tl.releases["bytes"].to_numpy())])
        lo = np.searchsorted(rts, ev["ts"][trims].astype(np.int64), side="left")
        hi = np.searchsorted(rts, (ev["ts"][trims] + ev["dur"][trims]).astype(np.int64), side="right")
        moved[trims] = -(cum[hi] - cum[lo])
    moved[failed] = 0
    effect[(moved > 0) & ((k == Kind.BRK) | (k == Kind.MMAP) | (k == Kind.MREMAP))] = GREW
    effect[(moved < 0)] = GAVE_BACK

    brk_after = np.zeros(len(ev), dtype=np.int64)
    if len(tl.breaks):
        bts = tl.breaks["ts"].to_numpy()
        i = np.searchsorted(bts, ev["ts"].astype(np.int64), side="right") - 1
        brk_after = np.where(i >= 0, tl.breaks["brk"].to_numpy()[np.maximum(i, 0)], 0).astype(np.int64)
    return Calls(ev, moved, effect, failed, brk_after)
