"""Children that get malloc from another library than the one probed.

The allocator probes follow the target's children (tracer/record/backends/bpf/uprobes.py), but they sit in
one library: a child that execs a program with another allocator (``LD_PRELOAD`` set for it, or
a program linked with jemalloc) makes calls no probe sees. Rather than let its allocator view
read as "no calls", each exec'd child is looked at once it has run a moment (its libraries are
mapped by then) and named, with the library it uses, in the trace and on the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tracer.columns import Columns
from tracer.events import Kind
from tracer.record import procfs
from tracer.record.backends.bpf import allocators

SETTLE_NS = 100_000_000  # an exec'd process is looked at once it has run this long
MAX_CHECKED = 64  # processes looked at per recording (each check parses its mapped ELF objects)


def same_library(a: allocators.AllocatorLib, b: allocators.AllocatorLib) -> bool:
    if a.build_id and b.build_id:
        return a.build_id == b.build_id
    try:
        return os.path.samefile(a.path, b.path)
    except OSError:
        return a.shown_path == b.shown_path


class OtherAllocators:
    def __init__(self, lib: allocators.AllocatorLib, root: int, say: Callable[[str], None]) -> None:
        self.lib, self.root, self.say = lib, root, say
        self.pending: dict[int, int] = {}  # pid -> when it exec'd
        self.checked = 0
        self.found: list[dict[str, Any]] = []

    def feed(self, ev: Columns) -> None:
        execs = np.flatnonzero(ev["kind"] == int(Kind.EXEC))
        for pid, ts in zip(ev["pid"][execs].tolist(), ev["ts"][execs].tolist(), strict=True):
            if pid != self.root:
                self.pending[int(pid)] = int(ts)

    def look_at(self, pid: int) -> None:
        """Look at ``pid`` at the next check (a process that was running before the recording)."""
        self.pending[pid] = 0

    def check(self) -> None:
        now = procfs.time_ns()
        for pid, ts in list(self.pending.items()):
            if now - ts < SETTLE_NS:
                continue
            del self.pending[pid]
            if self.checked >= MAX_CHECKED or not procfs.alive(pid):
                continue
            self.checked += 1
            try:
                other = allocators.find_for_pid(pid)
            except allocators.NoAllocator:
                continue  # gone, static, or unreadable: nothing certain to say
            if same_library(other, self.lib):
                continue
            try:
                program = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            except OSError:
                program = "?"
            self.found.append({"pid": pid, "program": program, "family": other.family, "library": other.shown_path})
            self.say(f"pid {pid} ({program}) gets malloc from {other.shown_path} ({other.family}), not from the "
                     f"traced {self.lib.shown_path}: its allocator calls are not traced")  # fmt: skip
