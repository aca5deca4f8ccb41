"""The address-space model against the kernel's rules for mmap, munmap, mprotect and mremap."""

from __future__ import annotations

from tracer.analysis.addrspace import AddressSpace

P = 4096
ANON = 0x22  # MAP_PRIVATE | MAP_ANONYMOUS
RW, NONE = 3, 0


def test_map_partial_unmap_and_overlay() -> None:
    s = AddressSpace(P)
    s.mmap(0x10000, 10 * P, RW, ANON)
    assert s.anon_bytes == 10 * P
    s.munmap(0x10000 + 2 * P, 3 * P)  # a hole in the middle splits it
    assert s.anon_bytes == 7 * P and len(s.regions) == 2
    s.mmap(0x10000, 1, RW, 0x12)  # MAP_FIXED file mapping over the first page (length rounds up)
    assert s.anon_bytes == 6 * P
    s.munmap(0, 1 << 40)
    assert s.anon_bytes == 0 and not s.regions


def test_prot_none_reservations_count_once_accessible() -> None:
    s = AddressSpace(P)
    s.mmap(0x4000_0000, 16384 * P, NONE, ANON | 0x4000)  # a 64 MiB arena reservation
    assert s.anon_bytes == 0
    s.mprotect(0x4000_0000, 33 * P, RW)
    assert s.anon_bytes == 33 * P and len(s.regions) == 2
    s.mprotect(0x4000_0000, 33 * P, NONE)
    assert s.anon_bytes == 0


def test_mremap_in_place_and_moving() -> None:
    s = AddressSpace(P)
    s.mmap(0x10000, 3 * P, RW, ANON)
    s.mremap(0x10000, 3 * P, 5 * P, 1, 0x10000)  # grew in place
    assert s.anon_bytes == 5 * P
    s.mremap(0x10000, 5 * P, 2 * P, 0, 0x10000)  # shrank in place
    assert s.anon_bytes == 2 * P
    s.mremap(0x10000, 2 * P, 20 * P, 1, 0x900000)  # moved and grew
    assert s.anon_bytes == 20 * P
    assert s.region_at(0x10000) is None and s.region_at(0x900000 + 19 * P) is not None
    s.mremap(0x900000, 20 * P, 20 * P, 1 | 2 | 4, 0xA00000)  # MREMAP_DONTUNMAP keeps the old range
    assert s.anon_bytes == 40 * P


def test_failed_calls_change_nothing() -> None:
    s = AddressSpace(P)
    s.apply("mmap", (0, P, RW, ANON, 0, 0), -12)
    s.apply("munmap", (0x1000, P, 0, 0, 0, 0), -22)
    assert s.anon_bytes == 0 and not s.regions
