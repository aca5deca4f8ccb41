"""Attach the allocator probes (probes/alloc.bpf.c) to the library that serves malloc in a process."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..allocators import AllocatorLib
from ..probesites import ProbeSite, choose_sites
from .uprobes import UprobeError, Uprobes

Detach = Callable[[], None]

BPF_PROG_TYPE_KPROBE = 2  # what uprobe programs are loaded as (bcc's BPF.KPROBE)

# exported name -> (BPF function prefix in alloc.bpf.c, argument registers its probe reads)
FUNCTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "malloc": ("malloc", ("rdi",)),
    "free": ("free", ("rdi",)),
    "calloc": ("calloc", ("rdi", "rsi")),
    "realloc": ("realloc", ("rdi", "rsi")),
    "reallocarray": ("reallocarray", ("rdi", "rsi", "rdx")),
    "posix_memalign": ("posix_memalign", ("rdi", "rsi", "rdx")),
    "aligned_alloc": ("aligned_alloc", ("rdi", "rsi")),
    "memalign": ("memalign", ("rdi", "rsi")),
    "valloc": ("valloc", ("rdi",)),
    "pvalloc": ("pvalloc", ("rdi",)),
    "malloc_trim": ("malloc_trim", ("rdi",)),
    "mallopt": ("mallopt", ("rdi", "rsi")),
    # C++ operators, probed only where the allocator library itself defines them
    "_Znwm": ("op_new", ("rdi",)),
    "_ZnwmRKSt9nothrow_t": ("op_new", ("rdi",)),
    "_Znam": ("op_new_array", ("rdi",)),
    "_ZnamRKSt9nothrow_t": ("op_new_array", ("rdi",)),
    "_ZnwmSt11align_val_t": ("op_new_aligned", ("rdi", "rsi")),
    "_ZnwmSt11align_val_tRKSt9nothrow_t": ("op_new_aligned", ("rdi", "rsi")),
    "_ZnamSt11align_val_t": ("op_new_array_aligned", ("rdi", "rsi")),
    "_ZnamSt11align_val_tRKSt9nothrow_t": ("op_new_array_aligned", ("rdi", "rsi")),
    "_ZdlPv": ("op_delete", ("rdi",)),
    "_ZdlPvRKSt9nothrow_t": ("op_delete", ("rdi",)),
    "_ZdlPvSt11align_val_t": ("op_delete", ("rdi",)),
    "_ZdaPv": ("op_delete_array", ("rdi",)),
    "_ZdaPvRKSt9nothrow_t": ("op_delete_array", ("rdi",)),
    "_ZdaPvSt11align_val_t": ("op_delete_array", ("rdi",)),
    "_ZdlPvm": ("op_delete_sized", ("rdi", "rsi")),
    "_ZdlPvmSt11align_val_t": ("op_delete_sized", ("rdi", "rsi")),
    "_ZdaPvm": ("op_delete_array_sized", ("rdi", "rsi")),
    "_ZdaPvmSt11align_val_t": ("op_delete_array_sized", ("rdi", "rsi")),
}
#: functions whose record is written at entry (no return value to wait for)
NO_RETURN = {"free", "op_delete", "op_delete_array", "op_delete_sized", "op_delete_array_sized"}
#: the slot of each BPF function in alloc.bpf.c (its CALL/DIRECT slot argument)
SLOTS = {
    fn: i
    for i, fn in enumerate(
        ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign", "valloc",
         "pvalloc", "malloc_trim", "mallopt", "op_new", "op_new_array", "op_new_aligned", "op_new_array_aligned",
         "free", "op_delete", "op_delete_array", "op_delete_sized", "op_delete_array_sized"]
    )
}


class ProbeRefused(Exception):
    """The kernel (or bcc) refused one probe; the message names it and says why."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass
class Attached:
    lib: AllocatorLib
    pid: int
    sites: dict[str, ProbeSite]
    elsewhere: dict[str, str] = field(default_factory=dict)  # function -> library, when not in ``lib``
    children: bool = False  # the probes follow the tasks ``pid`` creates
    probes: list[Detach] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "library": self.lib.shown_path,
            "family": self.lib.family,
            "build_id": self.lib.build_id,
            "elsewhere": self.elsewhere,
            "children": self.children,
            "sites": {
                name: {
                    "offset": s.offset,
                    "instruction": s.instruction,
                    "emulated": s.emulated,
                    "return_at_site": s.return_probe_ok,
                    "aliases": s.aliases,
                }
                for name, s in self.sites.items()
            },
        }


class TracefsProbes:
    """Probes defined in tracefs and opened for ``pid``; with ``inherit``, for the tasks it creates
    from then on too (tracer/backends/uprobes.py)."""

    def __init__(self, bpf: Any, uprobes: Uprobes, inherit: bool) -> None:
        self.bpf, self.uprobes, self.inherit = bpf, uprobes, inherit
        self.follows_children = inherit

    def attach(self, fn: str, path: str, site: ProbeSite, is_return: bool, at_site: bool, pid: int) -> Detach:
        if site.file_offset < 0:
            raise UprobeError(errno.ENOEXEC, "its address is not in the file")
        prog = self.bpf.load_func(fn, BPF_PROG_TYPE_KPROBE).fd
        offset = site.file_offset + (site.offset if at_site else 0)
        probe = self.uprobes.attach(prog, path, offset, is_return, pid, self.inherit, fn)
        return lambda: self.uprobes.detach(probe)


class BccProbes:
    """Probes attached by bcc through the perf uprobe PMU, for ``pid`` only. They share a site with
    the probes of bcc's Python tools, whose binding passes the kernel a stray reference-counter
    offset (the kernel refuses a second probe on an instruction whose offsets differ)."""

    follows_children = False

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    def attach(self, fn: str, path: str, site: ProbeSite, is_return: bool, at_site: bool, pid: int) -> Detach:
        bpf = self.bpf
        try:
            if is_return and at_site:
                at = site.address + site.offset
                bpf.attach_uretprobe(name=path, addr=at, fn_name=fn, pid=pid)
                return lambda: bpf.detach_uretprobe(name=path, addr=at, pid=pid)
            if is_return:
                bpf.attach_uretprobe(name=path, sym=site.symbol, fn_name=fn, pid=pid)
                return lambda: bpf.detach_uretprobe(name=path, sym=site.symbol, pid=pid)
            bpf.attach_uprobe(name=path, sym=site.symbol, sym_off=site.offset, fn_name=fn, pid=pid)
            return lambda: bpf.detach_uprobe(name=path, sym=site.symbol, pid=pid, sym_off=site.offset)
        except Exception as e:  # bcc raises bare Exception, its reason went to stderr
            raise UprobeError(errno.EINVAL, "bcc could not attach it") from e


Attacher = TracefsProbes | BccProbes


@contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """libbcc reports the real reason of a failure on fd 2; keep it for one clear sentence."""
    text = ""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")


def attach_or_share(bpf: Any, lib: AllocatorLib, pid: int, uprobes: Uprobes, inherit: bool) -> tuple[Attached, str]:
    """Attach through tracefs (following children with ``inherit``); where the kernel refuses that
    with EINVAL, another tracer holds a probe on one of the instructions, registered the way bcc's
    Python tools do it: share it their way, for ``pid`` only. Returns the attachment and a note
    ("" when there is nothing to say); raises the first refusal when sharing fails too."""
    try:
        return attach(bpf, lib, pid, TracefsProbes(bpf, uprobes, inherit)), ""
    except ProbeRefused as first:
        if first.errno != errno.EINVAL:
            raise
        try:
            with captured_stderr():
                done = attach(bpf, lib, pid, BccProbes(bpf))
        except ProbeRefused:
            raise first from None
        if not inherit:
            return done, ""
        return done, (f"{first}: another tracer holds a probe there; the allocator calls of this process are "
                      "traced, those of the children it forks are not")


def attach(bpf: Any, lib: AllocatorLib, pid: int, probes: Attacher) -> Attached:
    """Put entry and return probes on every allocator function ``lib`` exports, for ``pid`` (and
    its future children where ``probes`` follows them), and on the functions it lacks where
    another loaded library serves them (jemalloc has no malloc_trim).

    On a refusal the probes already attached are removed and :class:`ProbeRefused` names the probe
    and the kernel's reason.
    """
    done = Attached(lib, pid, {}, children=probes.follows_children)
    by_path: dict[tuple[str, str], list[str]] = {(lib.path, lib.shown_path): list(FUNCTIONS)}
    for name, where in lib.elsewhere.items():
        if name in FUNCTIONS:
            by_path.setdefault(where, []).append(name)
    try:
        for (path, shown), names in by_path.items():
            sites = choose_sites(path, {n: FUNCTIONS[n][1] for n in names})
            seen_addresses: set[int] = set()
            for name, site in sites.items():
                if site.address in seen_addresses:  # an alias of a function already probed
                    continue
                seen_addresses.add(site.address)
                done.sites[name] = site
                if path != lib.path:
                    done.elsewhere[name] = shown
                _attach_one(bpf, probes, done, path, shown, FUNCTIONS[name][0], site)
    except ProbeRefused:
        detach(done)
        raise
    return done


def _attach_one(bpf: Any, probes: Attacher, done: Attached, path: str, shown: str, fn: str, site: ProbeSite) -> None:
    bpf["site_shift"][ct.c_int(SLOTS[fn])] = ct.c_uint64(site.stack_shift or 0)
    where = f"{site.symbol}+{site.offset}" if site.offset else site.symbol
    try:
        if fn not in NO_RETURN:
            # The return probe first (an entry without its return would leave a call in flight).
            # It takes over the return address, which is still on top of the stack at the entry
            # site when nothing was pushed before it: there it shares the emulated site.
            done.probes.append(probes.attach(f"{fn}_return", path, site, True, site.return_probe_ok, done.pid))
        done.probes.append(probes.attach(f"{fn}_enter", path, site, False, True, done.pid))
    except UprobeError as e:
        raise ProbeRefused(f"the kernel refused the uprobe on {where} in {shown}: {e.strerror}", e.errno) from e


def detach(attached: Attached) -> None:
    """Remove the probes of one attachment (each removal waits for the kernel; done in parallel)."""

    def one(undo: Detach) -> None:
        try:
            undo()
        except Exception:  # noqa: BLE001 - already gone
            pass

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, attached.probes))
    attached.probes.clear()
