"""glibc's tcache and fastbins, followed step by step.

What becomes of a freed small chunk depends on what its bins hold at that moment, which depends
on every earlier step: this is a walk in time order over four kinds of step (a small chunk freed,
a small chunk handed out, a consolidation of an arena's fastbins or of all of them, a thread's
exit). Its state is kept in arrays so that the walk compiles (numba) and costs a few nanoseconds a
step (10M allocator calls: 0.2 s; the same walk in Python took 10 s): a tcache bin per (thread,
class) is a row of at most 7 block numbers, a fastbin per (arena, class) a list linked through the
blocks (``link``), newest first. ``tests/support/binwalk_reference.py`` is the same model written
plainly, against which the tests check it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FREE, HAND_OUT, CONSOLIDATE, EXIT = 0, 1, 2, 3
ALL_ARENAS = -1
CLASSES = 64  # size classes a tcache can hold: chunks of 32 to 1,040 bytes, 16 apart
TABLE_MAX = 1 << 23  # thread ids below this (the kernel's pid_max is at most 2^22) are numbered by a table


@njit(cache=True, nogil=True)
def walk(order: np.ndarray, t: np.ndarray, what: np.ndarray, idx: np.ndarray, cls: np.ndarray,
         open_thread: np.ndarray, close_thread: np.ndarray, arena: np.ndarray, threads: np.ndarray,
         arenas: int, ev_tid: np.ndarray, ptr: np.ndarray, small_fast: np.ndarray, take: np.ndarray,
         went: np.ndarray, until: np.ndarray, tcache: bool, fastbins: bool, count: int, cached: int, fast: int,
         never: int) -> int:  # pragma: no cover - compiled
    """Steps ``order[0], order[1], ...``: step ``s`` is ``what[s]`` at ``t[s]`` of block ``idx[s]``
    (for a consolidation, the block whose request or free consolidates, or -1 for all arenas; for
    an exit, the exit's event, whose thread ``ev_tid`` gives). Per block: its size class, the
    numbers of the threads that opened and closed it (``threads`` gives their ids), its arena.
    Sets ``went`` and ``until`` of the blocks; returns the mismatches (a chunk handed out at
    another address than the bin's newest)."""
    stack = np.empty((len(threads) * CLASSES, count), dtype=np.int64)
    depth = np.zeros(len(threads) * CLASSES, dtype=np.int64)
    head = np.full(arenas * CLASSES, -1, dtype=np.int64)
    link = np.full(len(ptr), -1, dtype=np.int64)
    mismatches = 0
    for s in order:
        w, i, now = what[s], idx[s], t[s]
        if w == FREE:
            tb = close_thread[i] * CLASSES + cls[i]
            if tcache and depth[tb] < count:
                stack[tb, depth[tb]] = i
                depth[tb] += 1
                went[i], until[i] = cached, never  # until it is taken again
            elif fastbins and small_fast[i]:
                fb = arena[i] * CLASSES + cls[i]
                link[i] = head[fb]
                head[fb] = i
                went[i], until[i] = fast, never
        elif w == HAND_OUT:  # from the tcache, else a fastbin, else elsewhere
            tb = open_thread[i] * CLASSES + cls[i]
            if take[i] and depth[tb] > 0:
                depth[tb] -= 1
                j = stack[tb, depth[tb]]
                until[j] = now
                mismatches += ptr[j] != ptr[i]
                continue
            fb = arena[i] * CLASSES + cls[i]
            j = head[fb]
            if j >= 0:
                head[fb] = link[j]
                until[j] = now
                mismatches += ptr[j] != ptr[i]
                if tcache:  # the rest of that fastbin moves into the tcache
                    while head[fb] >= 0 and depth[tb] < count:
                        m = head[fb]
                        head[fb] = link[m]
                        stack[tb, depth[tb]] = m
                        depth[tb] += 1
                        went[m] = cached
        elif w == CONSOLIDATE:  # the arena's fastbin chunks become free chunks
            a = arena[i] if i >= 0 else ALL_ARENAS
            for fb in range(len(head)):
                if a == ALL_ARENAS or fb // CLASSES == a:
                    j = head[fb]
                    while j >= 0:
                        until[j] = now
                        j = link[j]
                    head[fb] = -1
        else:  # a thread exited: its cached chunks go to the bins
            tid = ev_tid[i]
            for tb in range(len(depth)):
                if threads[tb // CLASSES] == tid:
                    for d in range(depth[tb]):
                        until[stack[tb, d]] = now
                    depth[tb] = 0
    return mismatches


def numbered(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``values`` (thread ids: small non-negative integers) in order, and each value's
    place among them; by a table when the values allow one (no sort of millions of steps)."""
    top = int(values.max(initial=0))
    if len(values) and values.min() >= 0 and top < TABLE_MAX:
        seen = np.zeros(top + 1, dtype=bool)
        seen[values] = True
        place = (np.cumsum(seen) - 1).astype(np.int32)  # fewer distinct values than the table holds
        return np.flatnonzero(seen), place[values]
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, inverse.astype(np.int64)
