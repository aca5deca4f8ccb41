"""A reference for glibc's tcache and fastbins, written plainly with dicts of lists (as the model
was first written), against which tests check the compiled walk of :mod:`tracer.analysis.bins`."""

from __future__ import annotations

import numpy as np

from tracer.analysis.chunks import CACHED, FAST, FASTBIN_MAX_CHUNK, MINSIZE, NEVER, TCACHE_COUNT, Blocks


def walk(b: Blocks, ts: list, what: list, idx: list, arena_of: np.ndarray, ev_tid: np.ndarray,
         tcache: bool, fastbins: bool) -> int:
    """The sequential part: tcache bins per thread and class, fastbins per arena and class."""
    cls = ((b.chunk - MINSIZE) // 16).tolist()
    ptr = b.ptr.tolist()
    chunk = b.chunk.tolist()
    close_tid, open_tid, take = b.close_tid.tolist(), b.open_tid.tolist(), b.tcache_take.tolist()
    arena = arena_of.tolist()
    went = b.went
    until = b.occupied_until
    tc: dict[tuple[int, int], list[int]] = {}
    fb: dict[tuple[int, int], list[int]] = {}
    where: dict[int, tuple[int, int]] = {}  # block -> its fastbin key
    mismatches = 0
    for t, w, i in zip(ts, what, idx, strict=True):
        if w == 0:  # a free of a small chunk
            key = (close_tid[i], cls[i])
            bin_ = tc.setdefault(key, [])
            if tcache and len(bin_) < TCACHE_COUNT:
                bin_.append(i)
                went[i], until[i] = CACHED, NEVER  # until it is taken again
            elif fastbins and chunk[i] <= FASTBIN_MAX_CHUNK:
                fkey = (arena[i], cls[i])
                fb.setdefault(fkey, []).append(i)
                where[i] = fkey
                went[i], until[i] = FAST, NEVER
        elif w == 1:  # a small chunk handed out: from the tcache, else a fastbin, else elsewhere
            key = (open_tid[i], cls[i])
            bin_ = tc.get(key)
            if take[i] and bin_:
                j = bin_.pop()
                until[j] = t
                mismatches += ptr[j] != ptr[i]
                continue
            fkey = (arena[i], cls[i])
            fbin = fb.get(fkey)
            if fbin:
                j = fbin.pop()
                where.pop(j, None)
                until[j] = t
                mismatches += ptr[j] != ptr[i]
                if tcache:  # the rest of that fastbin moves into the tcache
                    bin_ = tc.setdefault(key, [])
                    while fbin and len(bin_) < TCACHE_COUNT:
                        m = fbin.pop()
                        where.pop(m, None)
                        bin_.append(m)
                        went[m] = CACHED
        elif w == 2:  # consolidation: the arena's fastbin chunks become free chunks
            a = arena[i] if i >= 0 else None
            for fkey in [f for f in fb if a is None or f[0] == a]:
                for j in fb.pop(fkey):
                    where.pop(j, None)
                    until[j] = t
        else:  # a thread exited: its cached chunks go to the bins
            tid = int(ev_tid[i])
            for key in [key for key in tc if key[0] == tid]:
                for j in tc.pop(key):
                    until[j] = t
    return int(mismatches)
