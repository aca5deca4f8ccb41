"""The allocator catalogue: one row per exported function, and what is derived from it agrees with
what alloc.bpf.c does with a site (tracer/record/backends/bpf/catalogue.py)."""

from __future__ import annotations

from tracer.events import ALLOCATOR_KINDS, Kind
from tracer.record.backends.bpf import abi, alloc
from tracer.record.backends.bpf.catalogue import ALIASES, ALLOCATOR_FUNCTIONS, BY_SYMBOL, CATALOGUE, SLOTS


def test_one_row_per_symbol_and_every_allocator_kind_has_one() -> None:
    assert len(BY_SYMBOL) == len(CATALOGUE)
    assert {c.kind for c in CATALOGUE} == set(ALLOCATOR_KINDS)
    assert set(ALLOCATOR_FUNCTIONS) == set(BY_SYMBOL) | set(ALIASES) and len(set(ALLOCATOR_FUNCTIONS)) == len(
        ALLOCATOR_FUNCTIONS
    )
    assert set(ALIASES.values()) <= set(BY_SYMBOL) and not set(ALIASES) & set(BY_SYMBOL)


def test_the_symbols_of_one_slot_are_recorded_alike() -> None:
    for slot in SLOTS:
        rows = [c for c in CATALOGUE if c.slot == slot]
        assert len({(c.kind, c.aux, c.ints, c.at_entry) for c in rows}) == 1, slot


def test_sites_are_what_alloc_bpf_c_reads() -> None:
    for c in CATALOGUE:
        # site_enter reads PT_REGS_PARM1.. in order, as many as the flags' SITE_NARGS bits say
        assert c.regs == ("rdi", "rsi", "rdx")[: len(c.regs)] and 1 <= len(c.regs) <= abi.SITE_NARGS, c
        flags = alloc.site_flags(c)
        assert flags & abi.SITE_NARGS == len(c.regs)
        # alloc_direct pairs a free with the delete that tail-calls it: exactly those are recorded at entry
        assert bool(flags & abi.SITE_DIRECT) == c.at_entry == (c.kind in (Kind.FREE, Kind.DELETE)), c
        assert bool(flags & abi.SITE_INT) == (c.kind == Kind.MALLOPT), c


def test_slots_are_numbered_densely() -> None:
    assert sorted(SLOTS.values()) == list(range(abi.SLOTS)) and abi.SLOTS < 256  # struct site's u8 slot
    assert set(SLOTS) == {c.slot for c in CATALOGUE}
