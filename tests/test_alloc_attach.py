"""Attaching the allocator probes: what is attached where, and a refusal named with its reason."""

from __future__ import annotations

import pytest

from tracer import allocators
from tracer.backends import alloc


class Table:
    """bcc's table takes ctypes keys and values."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def __setitem__(self, key, value) -> None:  # noqa: ANN001
        self.values[key.value] = value.value


class FakeBPF:
    """Stands in for bcc's BPF object: records attachments, refuses one symbol like the kernel would."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.attached: list[tuple] = []
        self.detached: list[tuple] = []
        self.shifts = Table()

    def __getitem__(self, name: str) -> Table:
        assert name == "site_shift"
        return self.shifts

    def attach_uprobe(self, **kw) -> None:
        if kw.get("sym") == self.refuse:
            raise Exception("Failed to attach BPF program free_enter to uprobe")
        self.attached.append(("entry", kw.get("sym"), kw.get("sym_off"), kw["fn_name"]))

    def attach_uretprobe(self, **kw) -> None:
        self.attached.append(("return", kw.get("sym") or hex(kw.get("addr", 0)), None, kw["fn_name"]))

    def detach_uprobe(self, **kw) -> None:
        self.detached.append(kw)

    def detach_uretprobe(self, **kw) -> None:
        self.detached.append(kw)


@pytest.fixture(scope="module")
def libc() -> allocators.AllocatorLib:
    return allocators.find_for_launch("/bin/true")


def test_glibc_functions_get_entry_and_return_probes(libc: allocators.AllocatorLib) -> None:
    bpf = FakeBPF()
    done = alloc.attach(bpf, libc, 1234, lambda: "")
    entries = {a[1]: a for a in bpf.attached if a[0] == "entry"}
    assert entries["free"][2] == 3  # the je after test %rdi,%rdi: emulated, not single-stepped
    assert {"malloc", "calloc", "realloc", "posix_memalign", "malloc_trim", "mallopt"} <= set(entries)
    returns = [a for a in bpf.attached if a[0] == "return"]
    assert not any(a[3] == "free_return" for a in returns)  # free needs no return probe
    assert "memalign" not in done.sites or "aligned_alloc" not in done.sites  # one function, probed once


def test_a_refused_probe_is_named_and_everything_is_removed(libc: allocators.AllocatorLib) -> None:
    bpf = FakeBPF(refuse="free")
    with pytest.raises(alloc.ProbeRefused, match=r"uprobe on free\+3 in .*libc.so.6: .*permission denied"):
        alloc.attach(bpf, libc, 1234, lambda: "bpf: Failed to attach: permission denied")
    assert len(bpf.detached) == len(bpf.attached) > 0
