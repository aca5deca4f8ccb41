"""The allocator functions heapline probes: one row per exported symbol, as strace keeps one row per
syscall (syscallent.h). Everything else about them is derived from the rows: which symbols are
looked up and probed, the registers each entry probe reads, the record each writes, the probe slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.events import Kind

#: aux bits of NEW and DELETE records (tracer/events.py: bit 0 = new[], bit 1 = aligned)
NEW_ARRAY, NEW_ALIGNED = 1, 2

# the argument registers an entry probe reads (x86-64 calling convention: the first one, two, three)
R1, R2, R3 = ("rdi",), ("rdi", "rsi"), ("rdi", "rsi", "rdx")


@dataclass(frozen=True)
class Call:
    """One exported allocator function and what alloc.bpf.c records for a call of it."""

    symbol: str  # the exported name
    slot: str  # the call it is recorded as: the symbols of one call share its probe slot
    regs: tuple[str, ...]  # argument registers the entry probe reads (a0, a1, a2)
    kind: Kind
    aux: int = 0
    ints: bool = False  # the arguments are C ints, sign-extended (mallopt)
    at_entry: bool = False  # recorded at entry, without a return probe (free, operator delete)


# fmt: off
CATALOGUE: tuple[Call, ...] = (
    #     symbol                                 slot                     regs  kind
    Call("malloc",                              "malloc",                R1, Kind.MALLOC),
    Call("free",                                "free",                  R1, Kind.FREE, at_entry=True),
    Call("calloc",                              "calloc",                R2, Kind.CALLOC),
    Call("realloc",                             "realloc",               R2, Kind.REALLOC),
    Call("reallocarray",                        "reallocarray",          R3, Kind.REALLOCARRAY),
    Call("posix_memalign",                      "posix_memalign",        R3, Kind.POSIX_MEMALIGN),
    Call("aligned_alloc",                       "aligned_alloc",         R2, Kind.ALIGNED_ALLOC),
    Call("memalign",                            "memalign",              R2, Kind.MEMALIGN),
    Call("valloc",                              "valloc",                R1, Kind.VALLOC),
    Call("pvalloc",                             "pvalloc",               R1, Kind.PVALLOC),
    Call("malloc_trim",                         "malloc_trim",           R1, Kind.MALLOC_TRIM),
    Call("mallopt",                             "mallopt",               R2, Kind.MALLOPT, ints=True),
    # C++ operators, probed only where the allocator library itself defines them
    Call("_Znwm",                               "op_new",                R1, Kind.NEW),
    Call("_ZnwmRKSt9nothrow_t",                 "op_new",                R1, Kind.NEW),
    Call("_Znam",                               "op_new_array",          R1, Kind.NEW, NEW_ARRAY),
    Call("_ZnamRKSt9nothrow_t",                 "op_new_array",          R1, Kind.NEW, NEW_ARRAY),
    Call("_ZnwmSt11align_val_t",                "op_new_aligned",        R2, Kind.NEW, NEW_ALIGNED),
    Call("_ZnwmSt11align_val_tRKSt9nothrow_t",  "op_new_aligned",        R2, Kind.NEW, NEW_ALIGNED),
    Call("_ZnamSt11align_val_t",                "op_new_array_aligned",  R2, Kind.NEW, NEW_ARRAY | NEW_ALIGNED),
    Call("_ZnamSt11align_val_tRKSt9nothrow_t",  "op_new_array_aligned",  R2, Kind.NEW, NEW_ARRAY | NEW_ALIGNED),
    Call("_ZdlPv",                              "op_delete",             R1, Kind.DELETE, at_entry=True),
    Call("_ZdlPvRKSt9nothrow_t",                "op_delete",             R1, Kind.DELETE, at_entry=True),
    Call("_ZdlPvSt11align_val_t",               "op_delete",             R1, Kind.DELETE, at_entry=True),
    Call("_ZdaPv",                              "op_delete_array",       R1, Kind.DELETE, NEW_ARRAY, at_entry=True),
    Call("_ZdaPvRKSt9nothrow_t",                "op_delete_array",       R1, Kind.DELETE, NEW_ARRAY, at_entry=True),
    Call("_ZdaPvSt11align_val_t",               "op_delete_array",       R1, Kind.DELETE, NEW_ARRAY, at_entry=True),
    Call("_ZdlPvm",                             "op_delete_sized",       R2, Kind.DELETE, at_entry=True),
    Call("_ZdlPvmSt11align_val_t",              "op_delete_sized",       R2, Kind.DELETE, at_entry=True),
    Call("_ZdaPvm",                             "op_delete_array_sized", R2, Kind.DELETE, NEW_ARRAY, at_entry=True),
    Call("_ZdaPvmSt11align_val_t",              "op_delete_array_sized", R2, Kind.DELETE, NEW_ARRAY, at_entry=True),
)
# fmt: on

#: names that are another row's function wherever they exist (glibc's cfree is free): looked up, so
#: that a probe site names them as aliases, never probed themselves
ALIASES: dict[str, str] = {"cfree": "free"}

#: the rows by symbol, in the catalogue's order (where two symbols are one function, the first is probed)
BY_SYMBOL: dict[str, Call] = {c.symbol: c for c in CATALOGUE}
#: every name looked up in an allocator library: the probed ones, each followed by its aliases
ALLOCATOR_FUNCTIONS: tuple[str, ...] = tuple(
    name for c in CATALOGUE for name in (c.symbol, *(a for a, of in ALIASES.items() if of == c.symbol))
)
#: the index of each probe slot (alloc.bpf.c keeps the stack shift of its entry site by slot): the
#: calls that return first, then those recorded at entry
SLOTS: dict[str, int] = {
    slot: i
    for i, slot in enumerate(dict.fromkeys([c.slot for c in CATALOGUE if not c.at_entry]
                                           + [c.slot for c in CATALOGUE if c.at_entry]))
}  # fmt: skip
