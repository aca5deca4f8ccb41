"""The one event schema shared by every backend, the trace file and the model.

Every event is one fixed-size record of ``EVENT_DTYPE``. The BPF probes write this exact
layout (``probes/heapline.h`` mirrors it field for field), the strace backend builds the same
records from strace's text, the trace file stores these columns, and the model reads them.

Field meaning per kind (sizes in bytes, times in ns on CLOCK_MONOTONIC):

=========  ===================================================================================
kind       a0 .. a5 and ret
=========  ===================================================================================
BRK        a0=requested break; ret=resulting break (as the kernel returned it)
MMAP       a0=addr, a1=len, a2=prot, a3=flags, a4=fd (as unsigned), a5=offset; ret=address
MUNMAP     a0=addr, a1=len; ret=0 or -errno
MREMAP     a0=old_addr, a1=old_len, a2=new_len, a3=flags, a4=new_addr (0 without MREMAP_FIXED);
           ret=address
MADVISE    a0=addr, a1=len, a2=advice; ret=0 or -errno
MPROTECT   a0=addr, a1=len, a2=prot; ret=0 or -errno
FORK       a0=child pid (tid of the new task), a1=clone flags without the exit signal (fork: 0,
           vfork: CLONE_VM|CLONE_VFORK), a2=1 when it is a thread, a3=1 when the flags are known
EXEC       the address space of ``pid`` starts over; a0=the tid that called execve, a1/a2=the program's
           name as the kernel keeps it (comm: 16 bytes, NUL-padded, little-endian; 0 in older traces)
EXIT       a task ended; a0=exit code when known, a1=1 when a0 is known, a2=1 when it was the
           last task of the process (the address space is gone), a3=the signal that killed it
           when known (0 otherwise)
RSS        resident memory of ``pid`` in bytes: a0=anon, a1=file, a2=shmem, a3=swap, a4=the highest
           anon since the previous RSS record (0 when not known; samples are coalesced);
           aux=1 when the sample is the kernel's latest counters read at the end of a
           rate-limit interval (rss_stat is coalesced in the kernel), 0 when emitted live
RESIDENT   one mapping of ``pid`` as /proc/PID/smaps showed it (all records of one sample share
           ``ts``): a0=start, a1=end, a2=Rss, a3=Anonymous, a4=Swap (bytes); aux=what it is
           (RESIDENT_* below: other, [heap], [stack], file-backed). Only mappings holding pages.
PAGES      which pages of a heap mapping are in memory, as /proc/PID/pagemap showed them at the
           ``ts`` of a RESIDENT sample: aux=PAGES_EXTENT: a0..a1 is the mapping that was read;
           aux=PAGES_PRESENT: a0..a1 is a run of its pages in RAM (not swapped) inside it; a2=what
           the mapping is (RESIDENT_HEAP or RESIDENT_OTHER). Only the ``[heap]`` and mappings laid
           out as glibc's thread-arena heaps are read.
=========  ===================================================================================

Allocator calls (uprobes; one record per call, ``ts`` at entry, ``dur`` to the return):

==============  =====================================================================================
MALLOC          a0=size; ret=pointer
CALLOC          a0=nmemb, a1=size; ret=pointer
REALLOC         a0=old pointer, a1=size; ret=new pointer
REALLOCARRAY    a0=old pointer, a1=nmemb, a2=size; ret=new pointer
FREE            a0=pointer
POSIX_MEMALIGN  a0=memptr (where the pointer is stored), a1=alignment, a2=size; a3=the pointer stored;
                ret=0 or an error number
ALIGNED_ALLOC   a0=alignment, a1=size; ret=pointer (also memalign where both are one function)
MEMALIGN        a0=alignment, a1=size; ret=pointer
VALLOC          a0=size; ret=pointer
PVALLOC         a0=size; ret=pointer
MALLOC_TRIM     a0=pad; ret=1 if memory was released
MALLOPT         a0=param, a1=value (both sign-extended ints); ret
NEW             operator new: a0=size, a1=alignment (aligned forms); aux bit 0 = new[], bit 1 = aligned
DELETE          operator delete: a0=pointer, a1=size (sized forms, else 0); aux bit 0 = delete[]
==============  =====================================================================================

Recorded with ``--stacks``, every allocation (the kinds that return a block, recorded at their
return) also carries a4=its user stack's id in the trace's ``backend_end.stacks`` (0: none).

Syscall ``ret`` holds -errno on failure, exactly like the raw syscall return. ``dur`` is the time between
syscall entry and exit (0 for events that are not syscalls).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

#: Bump when the dtype or the meaning of a field changes (the trace file records it).
SCHEMA_VERSION = 1

EVENT_DTYPE = np.dtype(
    [
        ("ts", "<u8"),
        ("dur", "<u8"),
        ("pid", "<u4"),
        ("tid", "<u4"),
        ("kind", "<u2"),
        ("aux", "<u2"),
        ("cpu", "<u4"),
        ("a0", "<u8"),
        ("a1", "<u8"),
        ("a2", "<u8"),
        ("a3", "<u8"),
        ("a4", "<u8"),
        ("a5", "<u8"),
        ("ret", "<i8"),
    ]
)
assert EVENT_DTYPE.itemsize == 88


# Compare arrays with int(Kind.X) where it is hot: against an IntEnum member numpy widens a uint16
# array to int64 first (5x slower than against an int).
class Kind(IntEnum):
    BRK = 1
    MMAP = 2
    MUNMAP = 3
    MREMAP = 4
    MADVISE = 5
    MPROTECT = 6
    FORK = 16
    EXEC = 17
    EXIT = 18
    RSS = 19
    RESIDENT = 20
    PAGES = 21
    MALLOC = 32
    CALLOC = 33
    REALLOC = 34
    REALLOCARRAY = 35
    FREE = 36
    POSIX_MEMALIGN = 37
    ALIGNED_ALLOC = 38
    MEMALIGN = 39
    VALLOC = 40
    PVALLOC = 41
    MALLOC_TRIM = 42
    MALLOPT = 43
    NEW = 44
    DELETE = 45


#: aux of RESIDENT records: what the mapping is
RESIDENT_OTHER, RESIDENT_HEAP, RESIDENT_STACK, RESIDENT_FILE = 0, 1, 2, 3
#: aux of PAGES records: the mapping read, or a run of its pages in RAM
PAGES_EXTENT, PAGES_PRESENT = 0, 1

#: The memory syscalls, in the order the summary lists them.
SYSCALL_KINDS: tuple[Kind, ...] = (
    Kind.BRK,
    Kind.MMAP,
    Kind.MUNMAP,
    Kind.MREMAP,
    Kind.MADVISE,
    Kind.MPROTECT,
)

KIND_NAMES: dict[int, str] = {int(k): k.name.lower() for k in Kind}
NAME_KINDS: dict[str, int] = {v: k for k, v in KIND_NAMES.items()}


def empty(n: int = 0) -> np.ndarray:
    """A zeroed event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make(kind: Kind, ts: int, pid: int, tid: int, *args: int, ret: int = 0, dur: int = 0) -> np.void:
    """One event record; meant for backends that build events one at a time (strace, /proc)."""
    if len(args) > 6:
        raise ValueError("at most six arguments")
    rec = np.zeros((), dtype=EVENT_DTYPE)
    rec["ts"], rec["dur"], rec["pid"], rec["tid"], rec["kind"] = ts, dur, pid, tid, int(kind)
    for i, value in enumerate(args):
        rec[f"a{i}"] = value & 0xFFFF_FFFF_FFFF_FFFF
    rec["ret"] = ret
    return rec


def from_rows(rows: list[tuple[int, ...]]) -> np.ndarray:
    """Build an event array from tuples in ``EVENT_DTYPE`` field order (fast path for parsers)."""
    if not rows:
        return empty()
    return np.array(rows, dtype=EVENT_DTYPE)

#: Allocator calls that hand out a block (``ret``, or ``a3`` for posix_memalign, is the pointer).
ALLOC_KINDS: tuple[Kind, ...] = (
    Kind.MALLOC,
    Kind.CALLOC,
    Kind.REALLOC,
    Kind.REALLOCARRAY,
    Kind.POSIX_MEMALIGN,
    Kind.ALIGNED_ALLOC,
    Kind.MEMALIGN,
    Kind.VALLOC,
    Kind.PVALLOC,
    Kind.NEW,
)
#: Every allocator-call kind, in the order the summary lists them.
ALLOCATOR_KINDS: tuple[Kind, ...] = (*ALLOC_KINDS[:4], Kind.FREE, *ALLOC_KINDS[4:], Kind.DELETE,
                                     Kind.MALLOC_TRIM, Kind.MALLOPT)
