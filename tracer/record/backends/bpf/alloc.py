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

from tracer.record.backends.bpf.abi import SITE_DIRECT, SITE_GROUPS, SITE_INT, SITE_KEYS, Site
from tracer.record.backends.bpf.allocators import AllocatorLib
from tracer.record.backends.bpf.catalogue import BY_SYMBOL, SLOTS, Call
from tracer.record.backends.bpf.holders import holders
from tracer.record.backends.bpf.probesites import ProbeSite, choose_sites
from tracer.record.backends.bpf.uprobes import Probe, UprobeError, Uprobes

Detach = Callable[[], None]

BPF_PROG_TYPE_KPROBE = 2  # what uprobe programs are loaded as (bcc's BPF.KPROBE)


def site_flags(call: Call) -> int:
    """struct site's flags for an entry site of ``call``: registers read, ints, recorded at entry."""
    return len(call.regs) | (SITE_INT if call.ints else 0) | (SITE_DIRECT if call.at_entry else 0)


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
    attacher: Any = None  # what attached them (TracefsProbes can extend them to more processes)

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


@dataclass
class Target:
    """One probed instruction: the library's path, the function's site, and whether it is the
    site itself or the function's first instruction (a return probe where the site is too deep)."""

    path: str
    shown: str  # the path as the target sees it
    site: ProbeSite
    at_site: bool

    @property
    def file_offset(self) -> int:
        return self.site.file_offset + (self.site.offset if self.at_site else 0)


class TracefsProbes:
    """Each group of probes is one event defined in tracefs, opened for ``pid``; with ``inherit``,
    for the tasks it creates from then on too (tracer/record/backends/bpf/uprobes.py)."""

    def __init__(self, bpf: Any, uprobes: Uprobes, inherit: bool) -> None:
        self.bpf, self.uprobes, self.inherit = bpf, uprobes, inherit
        self.follows_children = inherit
        self.made: list[Probe] = []

    def attach(self, fn: str, targets: list[Target], is_return: bool, pid: int) -> Detach:
        missing = [t.site.symbol for t in targets if t.site.file_offset < 0]
        if missing:
            raise UprobeError(errno.ENOEXEC, f"the address of {missing[0]} is not in the file")
        prog = self.bpf.load_func(fn, BPF_PROG_TYPE_KPROBE).fd
        where = [(t.path, t.file_offset) for t in targets]
        probe = self.uprobes.attach(prog, where, is_return, pid, self.inherit, fn)
        self.made.append(probe)
        return lambda: self.uprobes.detach(probe)

    def follow(self, pid: int) -> bool:
        """Extend every probe to ``pid`` (a process that existed before the attach) and the tasks
        it creates; False if it is gone."""
        try:
            for probe in self.made:
                self.uprobes.follow(probe, pid)
        except OSError:
            return False
        return True


class BccProbes:
    """Probes attached by bcc through the perf uprobe PMU, one per instruction, for ``pid`` only.
    They share a site with the probes of bcc's Python tools, whose binding passes the kernel a
    stray reference-counter offset (the kernel refuses a second probe on an instruction whose
    offsets differ)."""

    follows_children = False

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    def attach(self, fn: str, targets: list[Target], is_return: bool, pid: int) -> Detach:
        undo: list[Detach] = []

        def detach_all() -> None:
            for u in undo:
                u()

        try:
            for t in targets:
                undo.append(self._one(fn, t, is_return, pid))
        except Exception as e:  # bcc raises bare Exception, its reason went to stderr
            detach_all()
            raise UprobeError(errno.EINVAL, "bcc could not attach it") from e
        return detach_all

    def _one(self, fn: str, t: Target, is_return: bool, pid: int) -> Detach:
        bpf, path, site = self.bpf, t.path, t.site
        if is_return and t.at_site:
            at = site.address + site.offset
            bpf.attach_uretprobe(name=path, addr=at, fn_name=fn, pid=pid)
            return lambda: bpf.detach_uretprobe(name=path, addr=at, pid=pid)
        if is_return:
            bpf.attach_uretprobe(name=path, sym=site.symbol, fn_name=fn, pid=pid)
            return lambda: bpf.detach_uretprobe(name=path, sym=site.symbol, pid=pid)
        bpf.attach_uprobe(name=path, sym=site.symbol, sym_off=site.offset, fn_name=fn, pid=pid)
        return lambda: bpf.detach_uprobe(name=path, sym=site.symbol, pid=pid, sym_off=site.offset)


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
        who = ", ".join(h.shown() for h in holders(lib.path, skip=os.getpid())) or "another tracer"
        try:
            with captured_stderr():
                sharer = bpf.bcc_attacher() if hasattr(bpf, "bcc_attacher") else bpf  # the CO-RE object's
                done = attach(bpf, lib, pid, BccProbes(sharer))
        except (ProbeRefused, ImportError):  # ImportError: the CO-RE object's sharing needs bcc's bindings
            raise ProbeRefused(f"{first}: {who} holds probes there, and they cannot be shared", first.errno) from None
        children = ", those of the children it forks are not" if inherit else ""
        return done, (f"{who} holds probes on {lib.shown_path}; heapline shares them its way: the allocator calls "
                      f"of pid {pid} are traced{children}")


def attach(bpf: Any, lib: AllocatorLib, pid: int, probes: Attacher) -> Attached:
    """Put entry and return probes on every allocator function ``lib`` exports, for ``pid`` (and
    its future children where ``probes`` follows them), and on the functions it lacks where
    another loaded library serves them (jemalloc has no malloc_trim).

    The entry sites go into groups in which no two share the low 12 bits of their address (how
    the BPF program tells them apart), each group one program and one probe event; the return
    probes are one more. On a refusal the probes already attached are removed and
    :class:`ProbeRefused` names the probe and the kernel's reason.
    """
    done = Attached(lib, pid, {}, children=probes.follows_children, attacher=probes)
    by_path: dict[tuple[str, str], list[str]] = {(lib.path, lib.shown_path): list(BY_SYMBOL)}
    for name, where in lib.elsewhere.items():
        if name in BY_SYMBOL:
            by_path.setdefault(where, []).append(name)
    chosen: list[tuple[str, str, ProbeSite]] = []  # (path, shown, site)
    seen: set[tuple[str, int]] = set()
    for (path, shown), names in by_path.items():
        for name, site in choose_sites(path, {n: BY_SYMBOL[n].regs for n in names}).items():
            if (path, site.address) in seen:  # an alias of a function already probed
                continue
            seen.add((path, site.address))
            done.sites[name] = site
            if path != lib.path:
                done.elsewhere[name] = shown
            chosen.append((path, shown, site))
    groups = _groups([site for _, _, site in chosen])
    table = bpf["sites"]
    for (_, _, site), group in zip(chosen, groups, strict=True):
        call = BY_SYMBOL[site.function]
        slot = SLOTS[call.slot]
        bpf["site_shift"][ct.c_int(slot)] = ct.c_uint64(site.stack_shift or 0)
        table[ct.c_int(group * SITE_KEYS + _low_bits(site))] = Site(int(call.kind), call.aux, slot, site_flags(call), 0)
    try:
        # the return probes first (an entry without its return would leave a call in flight). A
        # return probe takes over the return address, which is still on top of the stack at the
        # entry site when nothing was pushed before it: there it shares the emulated site.
        returns = [Target(path, shown, site, site.return_probe_ok) for path, shown, site in chosen
                   if not BY_SYMBOL[site.function].at_entry]  # fmt: skip
        _attach_group(probes, done, "alloc_return_any", returns, True)
        for g in range(max(groups, default=-1) + 1):
            entries = [Target(p, shown, site, True) for (p, shown, site), gi in zip(chosen, groups, strict=True)
                       if gi == g]  # fmt: skip
            _attach_group(probes, done, f"alloc_enter_g{g}", entries, False)
    except ProbeRefused:
        detach(done)
        raise
    return done


def _low_bits(site: ProbeSite) -> int:
    return (site.address + site.offset) & (SITE_KEYS - 1)


def _groups(sites: list[ProbeSite]) -> list[int]:
    """The group of each entry site: the first one where no other site has its low 12 bits."""
    taken: list[set[int]] = []
    out = []
    for site in sites:
        key = _low_bits(site)
        g = next((i for i, keys in enumerate(taken) if key not in keys), len(taken))
        if g == SITE_GROUPS:
            raise ProbeRefused(f"more than {SITE_GROUPS} probe sites end in the same 12 address bits ({key:#x})")
        if g == len(taken):
            taken.append(set())
        taken[g].add(key)
        out.append(g)
    return out


def _attach_group(probes: Attacher, done: Attached, fn: str, targets: list[Target], is_return: bool) -> None:
    if not targets:
        return
    try:
        done.probes.append(probes.attach(fn, targets, is_return, done.pid))
    except UprobeError as e:
        names = ", ".join(t.site.symbol + (f"+{t.site.offset}" if t.at_site and t.site.offset else "") for t in targets)
        shown = {t.shown for t in targets}
        what = "return probes" if is_return else "entry probes"
        raise ProbeRefused(f"the kernel refused the {what} on {names} in {', '.join(sorted(shown))}: {e.strerror}",
                           e.errno) from e


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
