"""Attaching the allocator probes: what is attached where, and a refusal named with its reason."""

from __future__ import annotations

import errno

import pytest

from tracer import allocators, probesites
from tracer.backends import alloc
from tracer.backends.uprobes import Probe, UprobeError


class Table:
    """bcc's table takes ctypes keys and values."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def __setitem__(self, key, value) -> None:  # noqa: ANN001
        self.values[key.value] = value.value


class Func:
    def __init__(self, name: str) -> None:
        self.name, self.fd = name, hash(name) & 0xFFFF


class FakeBPF:
    """Stands in for bcc's BPF object: site_shift and the loaded programs."""

    def __init__(self) -> None:
        self.shifts = Table()

    def __getitem__(self, name: str) -> Table:
        assert name == "site_shift"
        return self.shifts

    def load_func(self, name: str, prog_type: int) -> Func:
        assert prog_type == alloc.BPF_PROG_TYPE_KPROBE
        return Func(name)


class FakeUprobes:
    """Records what would be defined and opened; refuses one file offset like the kernel would."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.refuse_at = refuse_at
        self.attached: list[tuple] = []
        self.detached: list[Probe] = []

    def attach(self, prog_fd: int, path: str, file_offset: int, is_return: bool, pid: int, inherit: bool,
               label: str) -> Probe:  # fmt: skip
        if file_offset == self.refuse_at and not is_return:
            raise UprobeError(errno.EPERM, "Operation not permitted")
        fn = label.removesuffix("_return").removesuffix("_enter")
        self.attached.append(("return" if is_return else "entry", fn, file_offset, prog_fd, pid, inherit))
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
    entries = {a[1]: a for a in probes.attached if a[0] == "entry"}
    free = done.sites["free"]
    assert free.offset == 3  # the je after test %rdi,%rdi: emulated, not single-stepped
    assert entries["free"][2] == free.file_offset + 3
    assert {"malloc", "calloc", "realloc", "posix_memalign", "malloc_trim", "mallopt"} <= set(entries)
    returns = {a[1]: a for a in probes.attached if a[0] == "return"}
    assert "free" not in returns  # free needs no return probe
    malloc = done.sites["malloc"]
    at_site = malloc.file_offset + malloc.offset
    assert returns["malloc"][2] == (at_site if malloc.return_probe_ok else malloc.file_offset)
    assert all(a[4] == 1234 and a[5] for a in probes.attached)
    assert "memalign" not in done.sites or "aligned_alloc" not in done.sites  # one function, probed once


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
    with pytest.raises(alloc.ProbeRefused, match=r"uprobe on free\+3 in .*libc.so.6: Operation not permitted"):
        bpf = FakeBPF()
        alloc.attach(bpf, libc, 1234, alloc.TracefsProbes(bpf, probes, inherit=True))
    assert len(probes.detached) == len(probes.attached) > 0
