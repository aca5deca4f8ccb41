"""The mappings of one address space, rebuilt from mmap/munmap/mremap/mprotect as the kernel does it.

Kept as sorted, non-overlapping page ranges with their protection and whether they are anonymous,
so the bytes of anonymous memory the process can touch (prot != PROT_NONE) are known after
every call. PROT_NONE reservations (glibc's 64 MiB thread-arena heaps, guard pages) are tracked
but not counted until mprotect makes them accessible.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tracer.decode import MAP_ANONYMOUS, MREMAP_DONTUNMAP
from tracer.fields import ERRNO_MAX


@dataclass
class Region:
    start: int
    end: int
    prot: int
    anon: bool
    flags: int = 0  # mmap flags of the call that made it
    born: int = 0  # time it got its current protection at this address

    @property
    def counted(self) -> int:
        return self.end - self.start if self.anon and self.prot else 0


def _same(a: Region, b: Region) -> bool:
    return (a.prot, a.anon, a.flags, a.born) == (b.prot, b.anon, b.flags, b.born)


class AddressSpace:
    def __init__(self, page_size: int = 4096, history: list[tuple] | None = None) -> None:
        self.page = page_size
        self.regions: list[Region] = []
        self.anon_bytes = 0
        self.now = 0  # time of the call being applied
        self.reason = ""  # its name: what ends the pieces it removes
        # when given: (start, end, prot, anon, flags, born, died, died_by) of every piece that ended
        self.history = history

    def _align(self, n: int) -> int:
        return (n + self.page - 1) & ~(self.page - 1)

    def _cut(self, start: int, end: int) -> list[Region]:
        """Remove [start, end) and return the pieces that were there (clipped)."""
        regs = self.regions
        i = bisect.bisect_right(regs, start, key=lambda r: r.start)
        if i and regs[i - 1].end > start:
            i -= 1
        removed: list[Region] = []
        keep: list[Region] = []
        j = i
        while j < len(regs) and regs[j].start < end:
            r = regs[j]
            self.anon_bytes -= r.counted
            if r.start < start:
                keep.append(Region(r.start, start, r.prot, r.anon, r.flags, r.born))
            if r.end > end:
                keep.append(Region(end, r.end, r.prot, r.anon, r.flags, r.born))
            piece = Region(max(r.start, start), min(r.end, end), r.prot, r.anon, r.flags, r.born)
            removed.append(piece)
            if self.history is not None:
                self.history.append(
                    (piece.start, piece.end, piece.prot, piece.anon, piece.flags, piece.born, self.now, self.reason)
                )
            j += 1
        for r in keep:
            self.anon_bytes += r.counted
        regs[i:j] = keep
        return removed

    def _insert(self, pieces: list[Region]) -> None:
        for r in pieces:
            if r.end <= r.start:
                continue
            k = bisect.bisect_left(self.regions, r.start, key=lambda x: x.start)
            self.anon_bytes += r.counted
            regs = self.regions
            # pieces made by the same call with the same attributes are one mapping (mremap grows)
            if k and _same(regs[k - 1], r) and regs[k - 1].end == r.start:
                regs[k - 1].end = r.end
                k -= 1
            else:
                regs.insert(k, r)
            if k + 1 < len(regs) and _same(regs[k], regs[k + 1]) and regs[k].end == regs[k + 1].start:
                regs[k].end = regs[k + 1].end
                del regs[k + 1]

    # -- the calls ---------------------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int) -> None:
        end = addr + self._align(length)
        self._cut(addr, end)
        self._insert([Region(addr, end, prot, bool(flags & MAP_ANONYMOUS), flags, self.now)])

    def munmap(self, addr: int, length: int) -> None:
        self._cut(addr, addr + self._align(length))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        pieces = self._cut(addr, addr + self._align(length))
        self._insert([Region(p.start, p.end, prot, p.anon, p.flags, self.now) for p in pieces])

    def mremap(self, old: int, old_len: int, new_len: int, flags: int, new: int) -> None:
        old_len, new_len = self._align(old_len), self._align(new_len)
        if new == old:
            if new_len < old_len:
                self._cut(old + new_len, old + old_len)
            elif new_len > old_len:
                tmpl = self.region_at(old + old_len - 1) if old_len else self.region_at(old)
                prot, anon = (tmpl.prot, tmpl.anon) if tmpl else (3, True)
                self._cut(old + old_len, old + new_len)
                flags = tmpl.flags if tmpl else MAP_ANONYMOUS
                self._insert([Region(old + old_len, old + new_len, prot, anon, flags, self.now)])
            return
        # with MREMAP_DONTUNMAP the old range stays mapped (emptied); its pages move all the same
        moved = self._copy(old, old + old_len) if flags & MREMAP_DONTUNMAP else self._cut(old, old + old_len)
        self._cut(new, new + new_len)
        shifted = [Region(r.start - old + new, r.end - old + new, r.prot, r.anon, r.flags, self.now) for r in moved]
        if shifted and new_len > old_len:
            last = shifted[-1]
            shifted.append(Region(new + old_len, new + new_len, last.prot, last.anon, last.flags, self.now))
        elif not shifted:
            shifted = [Region(new, new + new_len, 3, True, MAP_ANONYMOUS, self.now)]
        limit = new + new_len
        self._insert(
            [Region(r.start, min(r.end, limit), r.prot, r.anon, r.flags, r.born) for r in shifted if r.start < limit]
        )

    def _copy(self, start: int, end: int) -> list[Region]:
        return [
            Region(max(r.start, start), min(r.end, end), r.prot, r.anon, r.flags, r.born)
            for r in self.regions
            if r.end > start and r.start < end
        ]

    def region_at(self, addr: int) -> Region | None:
        i = bisect.bisect_right(self.regions, addr, key=lambda r: r.start) - 1
        if i >= 0 and self.regions[i].start <= addr < self.regions[i].end:
            return self.regions[i]
        return None

    def apply(self, kind: str, a: tuple[int, ...], ret: int, ts: int = 0) -> None:
        """Apply one successful call (``kind`` is the event kind's name; ``a`` its six args)."""
        if -ERRNO_MAX <= ret < 0:
            return
        self.now, self.reason = ts, kind
        if kind == "mmap":
            self.mmap(ret, a[1], a[2], a[3])
        elif kind == "munmap":
            self.munmap(a[0], a[1])
        elif kind == "mprotect":
            self.mprotect(a[0], a[1], a[2])
        elif kind == "mremap":
            self.mremap(a[0], a[1], a[2], a[3], ret)
