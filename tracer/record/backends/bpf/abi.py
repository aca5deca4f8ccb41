"""Every value the BPF probes (probes/heapline.h, probes/*.bpf.c) share with this backend, once.

The C defines none of them: the loader passes each as a ``-D`` flag (:func:`cflags`), and
heapline.h refuses to compile when one is missing (``#error``) or when ``struct event``,
``struct batch`` or ``struct site`` is not laid out the way the Python reads it (a
``_Static_assert`` on the size of each struct and on the offset and size of each field).
``tests/unit/test_abi.py`` compiles heapline.h with these flags, and without each of them.

Values come from where the Python keeps them already: the kind codes from tracer/events.py
``Kind``, the record layout from ``EVENT_DTYPE``, the clone and mremap flags from tracer/decode.py,
the aux bits of operator new and the probe slots from catalogue.py (the allocator functions).
The others are kept here, and the modules that use them (backend.py, alloc.py, ringbuf.py)
import them from here.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterable

import numpy as np

from tracer import decode
from tracer.events import EVENT_DTYPE, Kind
from tracer.record.backends.bpf import catalogue
from tracer.record.backends.bpf.catalogue import NEW_ALIGNED, NEW_ARRAY

# ---- the per-CPU ``lost`` counters, in order --------------------------------------------------

#: the reasons a record is lost, by their names in the trace's ``lost_by_reason``
LOST_REASONS = ("ring_buffer_full", "inflight_table_full", "process_table_full", "thread_storage_full")
(
    LOST_RING_FULL,  # no ring had room for a record
    LOST_INFLIGHT_FULL,  # too many syscalls in flight at once
    LOST_PROCESS_TABLE_FULL,  # a child could not be followed
    LOST_TASK_STORAGE,  # no per-thread slot for an allocator call in flight
) = range(len(LOST_REASONS))
SPARE_USED = len(LOST_REASONS)  # not a loss: records that went to the spare ring
BATCH_BUSY = SPARE_USED + 1  # not a loss: allocator records written on their own (batch taken or full)
LOST_COUNTERS = BATCH_BUSY + 1  # how many counters there are

# ---- the ``traced`` map: tgid -> state ----------------------------------------------------------

TRACE_ACTIVE = 1
TRACE_PENDING_EXEC = 2  # a launched child held before its execve: nothing is recorded yet

# ---- kernel facts the probes test, as tracer/decode.py knows them -------------------------------

#: rss_stat's ``member``: the kernel's MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES
MM_FILE, MM_ANON, MM_SWAP, MM_SHMEM = range(4)
_KERNEL_FLAGS = {  # 64-bit masks (ULL in the C)
    "CLONE_THREAD_FLAG": decode.CLONE_THREAD,
    "CSIGNAL_MASK": decode.CSIGNAL,
    "VFORK_FLAGS": decode.CLONE_VFORK | decode.CLONE_VM,
    "MREMAP_FIXED_FLAG": decode.MREMAP_FIXED,
}

# ---- allocator batches (struct batch) -----------------------------------------------------------

BATCH_SLOTS = 64  # records per batch, a power of two (BATCH in the C)
#: fields an allocator record never uses, not carried in batches (read as zeros)
NOT_BATCHED = ("a5",)
#: fields a batch holds once for all its records (every record of a batch was made on its CPU)
PER_BATCH = ("cpu",)
#: fields most calls leave zero: a batch's ``used`` has the bit of each that some record set
#: (USED_<FIELD> in the C), and columns no batch of a poll used are not read
OPTIONAL = {"aux": 1, "a1": 2, "a2": 4, "a3": 8, "a4": 16}
#: struct batch: count, used bits, busy, first_ts, cpu, then each other field of EVENT_DTYPE for
#: BATCH_SLOTS records (a column per field)
BATCH_DTYPE = np.dtype([("n", "<u4"), ("used", "<u4"), ("busy", "<u8"), ("first_ts", "<u8"), ("cpu", "<u4"),
                        ("pad", "<u4")]
                       + [(name, EVENT_DTYPE[name], (BATCH_SLOTS,)) for name in EVENT_DTYPE.names
                          if name not in NOT_BATCHED + PER_BATCH])  # fmt: skip

# ---- allocator probe sites (struct site and the ``sites`` table of alloc.bpf.c) -----------------

SITE_GROUPS = 4  # groups of entry sites, each one program (alloc_enter_g<N>) and one probe event
SITE_KEYS = 4096  # keys per group: a site is found by the low 12 bits of its address
#: a site's flags: how many argument registers it reads (the low bits), whether they are ints to
#: sign-extend (mallopt), whether its record is written at entry (free, operator delete)
SITE_NARGS, SITE_INT, SITE_DIRECT = 3, 4, 8

SLOTS = len(catalogue.SLOTS)  # probe slots of alloc.bpf.c, one per call of tracer/record/backends/bpf/catalogue.py


class Site(ct.Structure):
    """struct site: what each probed instruction is."""

    _fields_ = [("kind", ct.c_uint16), ("aux", ct.c_uint16), ("slot", ct.c_uint8), ("flags", ct.c_uint8),
                ("pad", ct.c_uint16)]


# ---- the preload library's ring (probes/preload/heapline_preload.c, preload.py) -----------------

#: The shared-memory file the preloaded library writes allocator records into: this header, then
#: one u64 sequence word per slot, then the slots (EVENT_DTYPE records). A writer claims slot
#: ``head`` by compare-and-swap while ``head - tail < capacity``, writes ``PRELOAD_CLAIMED | pid``
#: into its sequence word, fills the record, then stores ``head + 1`` there (release); the
#: collector takes the committed run from ``tail`` and moves ``tail`` on. Counters and cursors sit
#: on cache lines of their own.
PRELOAD_MAGIC = 0x3130_4C50_4548_4C48  # "HLHEPL01", little-endian
PRELOAD_VERSION = 1
PRELOAD_BLOCK = 1  # flags bit: a writer that finds the ring full waits for room instead of counting a loss
PRELOAD_CLAIMED = 1 << 63  # a sequence word's value while its writer (pid in the low bits) fills the slot
PRELOAD_HEADER_DTYPE = np.dtype({
    "names": ["magic", "capacity", "flags", "version", "collector", "head", "tail", "lost", "waits"],
    "formats": ["<u8", "<u8", "<u4", "<u4", "<u4", "<u8", "<u8", "<u8", "<u8"],
    "offsets": [0, 8, 16, 20, 24, 64, 128, 192, 200],
    "itemsize": 256,
})


# ---- the flags ---------------------------------------------------------------------------------


def _layout(struct: str, size: int, fields: Iterable[tuple[str, int, int]]) -> dict[str, int]:
    """SIZEOF_<STRUCT>, and OFFSETOF_<STRUCT>_<FIELD> and SIZEOF_<STRUCT>_<FIELD> of each field."""
    out = {f"SIZEOF_{struct}": size}
    for name, offset, nbytes in fields:
        out[f"OFFSETOF_{struct}_{name.upper()}"] = offset
        out[f"SIZEOF_{struct}_{name.upper()}"] = nbytes
    return out


def _dtype_fields(dtype: np.dtype) -> list[tuple[str, int, int]]:
    return [(name, dtype.fields[name][1], dtype.fields[name][0].itemsize) for name in dtype.names]


def _ctypes_fields(struct: type[ct.Structure]) -> list[tuple[str, int, int]]:
    return [(name, getattr(struct, name).offset, getattr(struct, name).size) for name, *_ in struct._fields_]


def values() -> dict[str, int]:
    """Every shared value by its C name (tests/unit/test_abi.py checks the C defines none of them)."""
    return {
        **{f"K_{k.name}": int(k) for k in Kind},
        "NEW_ARRAY": NEW_ARRAY,
        "NEW_ALIGNED": NEW_ALIGNED,
        "LOST_RING_FULL": LOST_RING_FULL,
        "LOST_INFLIGHT_FULL": LOST_INFLIGHT_FULL,
        "LOST_PROCESS_TABLE_FULL": LOST_PROCESS_TABLE_FULL,
        "LOST_TASK_STORAGE": LOST_TASK_STORAGE,
        "SPARE_USED": SPARE_USED,
        "BATCH_BUSY": BATCH_BUSY,
        "LOST_COUNTERS": LOST_COUNTERS,
        "TRACE_ACTIVE": TRACE_ACTIVE,
        "TRACE_PENDING_EXEC": TRACE_PENDING_EXEC,
        "MM_FILE": MM_FILE,
        "MM_ANON": MM_ANON,
        "MM_SWAP": MM_SWAP,
        "MM_SHMEM": MM_SHMEM,
        **_KERNEL_FLAGS,
        "BATCH": BATCH_SLOTS,
        **{f"USED_{name.upper()}": bit for name, bit in OPTIONAL.items()},
        "SLOTS": SLOTS,
        "SITE_GROUPS": SITE_GROUPS,
        "SITE_KEYS": SITE_KEYS,
        "SITE_NARGS": SITE_NARGS,
        "SITE_INT": SITE_INT,
        "SITE_DIRECT": SITE_DIRECT,
        **_layout("EVENT", EVENT_DTYPE.itemsize, _dtype_fields(EVENT_DTYPE)),
        **_layout("BATCH", BATCH_DTYPE.itemsize, _dtype_fields(BATCH_DTYPE)),
        **_layout("SITE", ct.sizeof(Site), _ctypes_fields(Site)),
    }


def preload_values() -> dict[str, int]:
    """The values the preload library adds to those of :func:`values` (its ring's layout)."""
    return {
        "PRELOAD_MAGIC": PRELOAD_MAGIC,
        "PRELOAD_VERSION": PRELOAD_VERSION,
        "PRELOAD_BLOCK": PRELOAD_BLOCK,
        "PRELOAD_CLAIMED": PRELOAD_CLAIMED,
        **_layout("RING", PRELOAD_HEADER_DTYPE.itemsize, _dtype_fields(PRELOAD_HEADER_DTYPE)),
    }


def cflags(preload: bool = False) -> list[str]:
    """The values as compiler flags: ``-DNAME=value`` (the kernel's masks as unsigned 64-bit); with
    ``preload``, those of the preload library (probes/preload/heapline_preload.c) too."""
    shared = {**values(), **(preload_values() if preload else {})}
    return [f"-D{name}={value:#x}ULL" if name in _UNSIGNED64 else f"-D{name}={value}"
            for name, value in shared.items()]


_UNSIGNED64 = {*_KERNEL_FLAGS, "PRELOAD_MAGIC", "PRELOAD_CLAIMED"}


def stamp() -> int:
    """A digest of every value the probes share: the CO-RE object carries the one it was built with
    (ABI_STAMP) and is loaded only where it equals this one."""
    import hashlib

    digest = hashlib.sha256("\n".join(cflags()).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


if __name__ == "__main__":  # the flags make builds the CO-RE object and the preload library with
    print(" ".join([*cflags(preload=True), f"-DABI_STAMP={stamp():#x}ULL"]))
