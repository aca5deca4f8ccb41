"""Each event kind's fields by name: the one place that says which of ``a0..a5``, ``aux`` and ``ret``
carries what (the table in :mod:`tracer.events`), the way strace's ``print_mmap`` names each raw
argument once.

Every accessor takes an event array or :class:`~tracer.columns.Columns` (anything indexed by field
name, whole or selected) and returns that column, or a mask, for events of its kind: ``mmap.length(ev)``
is the length argument of ``ev``'s mmap events (the caller selects the kind; the accessors never
filter). Accessors of mixed kinds (``blocks.pointer_out``) say what they mean for each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tracer.columns import Events
from tracer.events import Kind

Column = Callable[[Events], np.ndarray]

#: a syscall's return value in ``[-ERRNO_MAX, -1]`` is ``-errno`` (the kernel's IS_ERR_VALUE)
ERRNO_MAX = 4095


def _field(name: str, doc: str) -> staticmethod:
    def get(ev: Events) -> np.ndarray:
        return ev[name]

    get.__doc__ = doc
    return staticmethod(get)


def _flag(name: str, doc: str, bit: int | None = None) -> staticmethod:
    """A mask: the field is 1 (or has ``bit`` set)."""

    def get(ev: Events) -> np.ndarray:
        col = ev[name]
        return col == 1 if bit is None else (col & bit) != 0

    get.__doc__ = doc
    return staticmethod(get)


def _int32(name: str, doc: str) -> staticmethod:
    """A C ``int`` the probe stored as a 64-bit value: its low 32 bits, signed."""

    def get(ev: Events) -> np.ndarray:
        return ev[name].astype(np.uint32).view(np.int32).astype(np.int64)

    get.__doc__ = doc
    return staticmethod(get)


def ok(ev: Events) -> np.ndarray:
    """Mask: the syscall succeeded (its return value is not ``-errno``)."""
    r = ev["ret"]
    return ~((r < 0) & (r >= -ERRNO_MAX))


def arguments(ev: Events, n: int = 6) -> list[list[int]]:
    """The first ``n`` raw argument columns as lists, for the decoders that name each argument
    themselves per kind (``decode.format_call``, ``addrspace.AddressSpace.apply``)."""
    return [ev[f"a{i}"].tolist() for i in range(n)]


def page_up(n: np.ndarray, page: int) -> np.ndarray:
    """Lengths rounded up to whole pages, as the kernel rounds a syscall's length (uint64)."""
    p = np.uint64(page - 1)
    return (n.astype(np.uint64) + p) & ~p


# ---- the memory syscalls -----------------------------------------------------------------------


class brk:  # noqa: N801 - named as the kind, like the syscall
    requested = _field("a0", "the break asked for (0: a query)")
    result = _field("ret", "the break the kernel left (it refuses a move by returning the old one)")


class mmap:  # noqa: N801
    addr = _field("a0", "the address hint (or the fixed address)")
    length = _field("a1", "the length asked for, in bytes (not page rounded)")
    prot = _field("a2", "PROT_* bits")
    flags = _field("a3", "MAP_* bits")
    fd = _int32("a4", "the file descriptor (-1 for anonymous memory)")
    offset = _field("a5", "the file offset")
    result = _field("ret", "the mapped address, or -errno")


class munmap:  # noqa: N801
    addr = _field("a0", "the start of the range")
    length = _field("a1", "its length, in bytes (not page rounded)")


class mremap:  # noqa: N801
    old_addr = _field("a0", "the mapping's address")
    old_length = _field("a1", "its length before")
    new_length = _field("a2", "its length after")
    flags = _field("a3", "MREMAP_* bits")
    new_addr = _field("a4", "the address asked for with MREMAP_FIXED (0 without)")
    result = _field("ret", "the mapping's address after, or -errno")


class madvise:  # noqa: N801
    addr = _field("a0", "the start of the range")
    length = _field("a1", "its length, in bytes (not page rounded)")
    advice = _field("a2", "the MADV_* value")


class mprotect:  # noqa: N801
    addr = _field("a0", "the start of the range")
    length = _field("a1", "its length, in bytes (not page rounded)")
    prot = _field("a2", "the new PROT_* bits (0: PROT_NONE)")


# ---- processes ---------------------------------------------------------------------------------


class forks:  # noqa: N801
    child = _field("a0", "the new task's tid (its pid when it is a process)")
    flags = _field("a1", "the clone flags without the exit signal (fork: 0; vfork: CLONE_VM|CLONE_VFORK)")
    thread = _flag("a2", "mask: the new task is a thread of the caller's process")
    flags_known = _flag("a3", "mask: the flags were seen")


class execs:  # noqa: N801
    caller = _field("a0", "the tid that called execve (the process's address space starts over)")
    comm_lo = _field("a1", "bytes 0-7 of the program's name as the kernel keeps it (comm, NUL-padded; 0: not known)")
    comm_hi = _field("a2", "bytes 8-15 of that name")


class exits:  # noqa: N801
    code = _field("a0", "the exit code, where code_known")
    code_known = _flag("a1", "mask: the exit code is known")
    last_task = _flag("a2", "mask: the process's last task ended (its address space is gone)")
    signal = _field("a3", "the signal that killed it, when known (0 otherwise)")

    @staticmethod
    def code_at(ev: Events, i: int) -> int | None:
        """The exit code of event ``i`` of ``ev``, None when it is not known."""
        return int(ev["a0"][i]) if ev["a1"][i] == 1 else None


class rss:  # noqa: N801
    anon = _field("a0", "resident anonymous bytes")
    file = _field("a1", "resident file-backed bytes")
    shmem = _field("a2", "resident shared-memory bytes")
    swap = _field("a3", "swapped-out bytes")
    anon_high = _field("a4", "the highest anon since the previous sample (0 when not known)")
    at_interval = _flag("aux", "mask: the kernel's latest counters read at the end of a rate-limit interval")


class resident:  # noqa: N801
    start = _field("a0", "the mapping's start")
    end = _field("a1", "its end")
    rss = _field("a2", "its resident bytes (smaps Rss)")
    anon = _field("a3", "its resident anonymous bytes (smaps Anonymous)")
    swap = _field("a4", "its swapped-out bytes")
    what = _field("aux", "RESIDENT_OTHER, RESIDENT_HEAP, RESIDENT_STACK or RESIDENT_FILE")


class pages:  # noqa: N801
    start = _field("a0", "the start of the mapping read, or of a run of pages in RAM")
    end = _field("a1", "its end")
    what = _field("aux", "PAGES_EXTENT (the mapping read) or PAGES_PRESENT (a run in RAM)")
    mapping = _field("a2", "RESIDENT_HEAP ([heap]) or RESIDENT_OTHER (a thread-arena heap)")


# ---- allocator calls ---------------------------------------------------------------------------


class malloc:  # noqa: N801 - also valloc, pvalloc and operator new (size in a0)
    size = _field("a0", "the size asked for")
    result = _field("ret", "the pointer returned (0: NULL)")


class calloc:  # noqa: N801
    nmemb = _field("a0", "the number of elements")
    size = _field("a1", "the size of each")


class realloc:  # noqa: N801 - also reallocarray's old pointer
    old = _field("a0", "the pointer given (0: NULL, a malloc)")
    size = _field("a1", "the size asked for (0 with a pointer: a free)")
    result = _field("ret", "the pointer returned")


class reallocarray:  # noqa: N801
    old = _field("a0", "the pointer given")
    nmemb = _field("a1", "the number of elements")
    size = _field("a2", "the size of each")


class free:  # noqa: N801 - also operator delete
    ptr = _field("a0", "the pointer freed (0: NULL)")


class posix_memalign:  # noqa: N801
    memptr = _field("a0", "where the pointer is stored")
    alignment = _field("a1", "the alignment asked for")
    size = _field("a2", "the size asked for")
    stored = _field("a3", "the pointer stored")
    result = _field("ret", "0, or an error number")


class memalign:  # noqa: N801 - also aligned_alloc
    alignment = _field("a0", "the alignment asked for")
    size = _field("a1", "the size asked for")


class malloc_trim:  # noqa: N801
    pad = _field("a0", "the bytes to leave at the top of the heap")
    released = _field("ret", "1 if memory was given back")


class mallopt:  # noqa: N801
    param = _int32("a0", "the M_* parameter (negative in glibc's malloc.h)")
    value = _int32("a1", "the value")
    accepted = _flag("ret", "mask: mallopt returned 1")


NEW_ARRAY, NEW_ALIGNED = 1, 2  # aux bits of NEW and DELETE


class new:  # noqa: N801 - operator new and delete
    size = _field("a0", "the size asked for (delete: the sized forms' size, else 0 in a1)")
    alignment = _field("a1", "the alignment of the aligned forms")
    array = _flag("aux", "mask: new[] / delete[]", NEW_ARRAY)
    aligned = _flag("aux", "mask: an aligned form", NEW_ALIGNED)


# ---- blocks, over every allocator kind at once -------------------------------------------------

# which arguments give each allocation kind's requested size: (i,) a_i, (i, j) a_i * a_j
_SIZE_ARGS: dict[int, tuple[int, ...]] = {
    **{int(k): (0,) for k in (Kind.MALLOC, Kind.VALLOC, Kind.PVALLOC, Kind.NEW)},
    int(Kind.CALLOC): (0, 1),
    **{int(k): (1,) for k in (Kind.REALLOC, Kind.ALIGNED_ALLOC, Kind.MEMALIGN)},
    int(Kind.REALLOCARRAY): (1, 2),
    int(Kind.POSIX_MEMALIGN): (2,),
}
_FORMS = sorted(set(_SIZE_ARGS.values()))
_SIZE_FORM = np.zeros(64, dtype=np.uint8)  # 1 + index in _FORMS; 0: not an allocation
for _k, _args in _SIZE_ARGS.items():
    _SIZE_FORM[_k] = 1 + _FORMS.index(_args)


class blocks:  # noqa: N801
    """What every allocator call does to blocks, whatever its kind (vectorized over mixed kinds)."""

    @staticmethod
    def requested_size(ev: Events) -> np.ndarray:
        """The size each allocation asked for (0 for other kinds), as the program asked it: pvalloc's
        page rounding and valloc's alignment are the allocator's."""
        form = _SIZE_FORM.take(ev["kind"], mode="clip")
        size = np.zeros(len(ev), dtype=np.uint64)
        cols: dict[int, np.ndarray] = {}

        def arg(i: int) -> np.ndarray:  # one contiguous copy per argument used
            if i not in cols:
                cols[i] = np.ascontiguousarray(ev[f"a{i}"])
            return cols[i]

        for f, args in enumerate(_FORMS, start=1):
            m = form == f
            if m.any():
                size[m] = arg(args[0])[m] if len(args) == 1 else arg(args[0])[m] * arg(args[1])[m]
        return size

    @staticmethod
    def pointer_out(ev: Events) -> np.ndarray:
        """The pointer each call handed out (``ret``; posix_memalign's stored pointer when it
        returned 0), as uint64; meaningful for the allocation kinds."""
        kind, ret = ev["kind"], np.ascontiguousarray(ev["ret"]).view(np.uint64)  # a view: ret is int64
        memalign = kind == Kind.POSIX_MEMALIGN
        if not memalign.any():
            return ret
        return np.where(memalign, np.where(ev["ret"] == 0, ev["a3"], 0), ret).astype(np.uint64)

    stack = _field("a4", "the allocation's stack id in the trace's stacks (recorded with --stacks; 0: none)")

    @staticmethod
    def pointer_in(ev: Events) -> np.ndarray:
        """The pointer each free, delete, realloc or reallocarray was given (``a0``), as uint64."""
        return np.ascontiguousarray(ev["a0"])
