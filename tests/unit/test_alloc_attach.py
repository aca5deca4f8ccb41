"""Attaching the allocator probes: what is attached where, and a refusal named with its reason."""

from __future__ import annotations

import dataclasses
import errno

import pytest

from tracer.events import Kind
from tracer.record.backends.bpf import alloc, allocators, probesites
from tracer.record.backends.bpf.uprobes import Probe, UprobeError


class Table:
    """bcc's table takes ctypes keys and values."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def __setitem__(self, key, value) -> None:  # noqa: ANN001
        self.values[key.value] = getattr(value, "value", value)


class Func:
    def __init__(self, name: str) -> None:
        self.name, self.fd = name, hash(name) & 0xFFFF


class FakeBPF:
    """Stands in for bcc's BPF object: site_shift and the loaded programs."""

    def __init__(self) -> None:
        self.tables = {"site_shift": Table(), "sites": Table()}

    def __getitem__(self, name: str) -> Table:
        return self.tables[name]

    def load_func(self, name: str, prog_type: int) -> Func:
        assert prog_type == alloc.BPF_PROG_TYPE_KPROBE
        return Func(name)


class FakeUprobes:
    """Records what would be defined and opened; refuses one file offset like the kernel would."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.refuse_at = refuse_at
        self.attached: list[tuple] = []
        self.detached: list[Probe] = []

    def attach(self, prog_fd: int, where: list[tuple[str, int]], is_return: bool, pid: int, inherit: bool,
               label: str) -> Probe:  # fmt: skip
        if any(offset == self.refuse_at for _, offset in where) and not is_return:
            raise UprobeError(errno.EPERM, "Operation not permitted")
        self.attached.append((label, [offset for _, offset in where], prog_fd, pid, inherit))
        return Probe(f"{label}_{len(self.attached)}")

    def detach(self, probe: Probe) -> None:
        self.detached.append(probe)


@pytest.fixture(scope="module")
def libc() -> allocators.AllocatorLib:
    return allocators.find_for_launch("/bin/true")


def test_glibc_functions_get_entry_and_return_probes(libc: allocators.AllocatorLib) -> None:
    probes = FakeUprobes()
    bpf = FakeBPF()
    done = alloc.attach(bpf, libc, 1234, alloc.TracefsProbes(bpf, probes, inherit=True))
    assert done.children
    assert {"malloc", "calloc", "realloc", "posix_memalign", "malloc_trim", "mallopt"} <= set(done.sites)
    assert "memalign" not in done.sites or "aligned_alloc" not in done.sites  # one function, probed once
    free, malloc = done.sites["free"], done.sites["malloc"]
    assert free.offset == 3  # the je after test %rdi,%rdi: emulated, not single-stepped
    events = {label: offsets for label, offsets, *_ in probes.attached}
    entries = [o for label, offsets in events.items() if label.startswith("alloc_enter_g") for o in offsets]
    assert sorted(entries) == sorted(s.file_offset + s.offset for s in done.sites.values())
    returns = events["alloc_return_any"]
    assert free.file_offset not in returns and free.file_offset + 3 not in returns  # free: no return probe
    assert (malloc.file_offset + malloc.offset if malloc.return_probe_ok else malloc.file_offset) in returns
    assert all(pid == 1234 and inherit for *_, pid, inherit in probes.attached)

    # the table the BPF program reads: each entry site, by group and low 12 address bits
    table = bpf.tables["sites"].values
    assert len(table) == len(done.sites)
    key = next(k for k in table if k % 4096 == (free.address + 3) & 0xFFF)
    assert (table[key].kind, table[key].flags & alloc.SITE_DIRECT) == (Kind.FREE, alloc.SITE_DIRECT)
    assert f"alloc_enter_g{key // 4096}" in events


def test_sites_sharing_low_address_bits_go_to_separate_groups() -> None:
    site = alloc.choose_sites(allocators.find_for_launch("/bin/true").path, {"malloc": ("rdi",)})["malloc"]
    clash = [dataclasses.replace(site, address=site.address + 4096 * i) for i in range(5)]
    assert alloc._groups(clash[:4]) == [0, 1, 2, 3]
    assert alloc._groups([site, dataclasses.replace(site, address=site.address + 1)]) == [0, 0]
    with pytest.raises(alloc.ProbeRefused, match="more than 4 probe sites"):
        alloc._groups(clash)


def test_file_offsets_are_where_the_code_is(libc: allocators.AllocatorLib) -> None:
    """The offset a definition names holds the instruction the site was chosen for."""
    bpf = FakeBPF()
    done = alloc.attach(bpf, libc, 1234, alloc.TracefsProbes(bpf, FakeUprobes(), inherit=False))
    assert not done.children
    with open(libc.path, "rb") as f:
        for site in done.sites.values():
            f.seek(site.file_offset + site.offset)
            insn = next(probesites._ATT.disasm(f.read(16), site.address + site.offset))
            assert probesites._text(insn) == site.instruction, site


def test_a_refused_probe_is_named_and_everything_is_removed(libc: allocators.AllocatorLib) -> None:
    site = alloc.choose_sites(libc.path, {"free": ("rdi",)})["free"]
    probes = FakeUprobes(refuse_at=site.file_offset + site.offset)
    with pytest.raises(alloc.ProbeRefused, match=r"entry probes on .*free\+3.* in .*libc.so.6: Operation not permit"):
        bpf = FakeBPF()
        alloc.attach(bpf, libc, 1234, alloc.TracefsProbes(bpf, probes, inherit=True))
    assert len(probes.detached) == len(probes.attached) > 0
