"""Attach the allocator probes (probes/alloc.bpf.c) to the library that serves malloc in a process."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..allocators import AllocatorLib
from ..probesites import ProbeSite, choose_sites

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


@dataclass
class Attached:
    lib: AllocatorLib
    pid: int
    sites: dict[str, ProbeSite]
    elsewhere: dict[str, str] = field(default_factory=dict)  # function -> library, when not in ``lib``
    # (path, symbol or "" for an address, offset from the symbol or the address, is_return)
    probes: list[tuple[str, str, int, bool]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "library": self.lib.shown_path,
            "family": self.lib.family,
            "build_id": self.lib.build_id,
            "elsewhere": self.elsewhere,
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


def attach(bpf: Any, lib: AllocatorLib, pid: int, why: Callable[[], str]) -> Attached:
    """Put entry and return probes on every allocator function ``lib`` exports, for ``pid`` only, and
    on the functions it lacks where another loaded library serves them (jemalloc has no malloc_trim).

    ``why`` returns what bcc printed while attaching (its reason for a refusal). On a refusal
    the probes already attached are removed and :class:`ProbeRefused` names the probe.
    """
    done = Attached(lib, pid, {})
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
                _attach_one(bpf, done, path, shown, FUNCTIONS[name][0], site, why)
    except ProbeRefused:
        detach(bpf, done)
        raise
    return done


def _attach_one(
    bpf: Any, done: Attached, path: str, shown: str, fn: str, site: ProbeSite, why: Callable[[], str]
) -> None:
    bpf["site_shift"][ct.c_int(SLOTS[fn])] = ct.c_uint64(site.stack_shift or 0)
    pid = done.pid
    try:
        if fn not in NO_RETURN:
            # The return probe first (an entry without its return would leave a call in flight).
            # It takes over the return address, which is still on top of the stack at the entry
            # site when nothing was pushed before it: there it shares the emulated site.
            if site.return_probe_ok:
                at = site.address + site.offset
                bpf.attach_uretprobe(name=path, addr=at, fn_name=f"{fn}_return", pid=pid)
                done.probes.append((path, "", at, True))
            else:
                bpf.attach_uretprobe(name=path, sym=site.symbol, fn_name=f"{fn}_return", pid=pid)
                done.probes.append((path, site.symbol, 0, True))
        bpf.attach_uprobe(name=path, sym=site.symbol, sym_off=site.offset, fn_name=f"{fn}_enter", pid=pid)
        done.probes.append((path, site.symbol, site.offset, False))
    except Exception as e:  # bcc raises bare Exception
        reason = why().strip().splitlines()
        detail = reason[-1] if reason else str(e)
        where = f"{site.symbol}+{site.offset}" if site.offset else site.symbol
        raise ProbeRefused(f"the kernel refused the uprobe on {where} in {shown}: {detail}") from e


def detach(bpf: Any, attached: Attached) -> None:
    """Remove the probes of one attachment (each removal waits for the kernel; done in parallel)."""

    def one(p: tuple[str, str, int, bool]) -> None:
        path, symbol, offset, is_return = p
        try:
            if is_return and not symbol:
                bpf.detach_uretprobe(name=path, addr=offset, pid=attached.pid)
            elif is_return:
                bpf.detach_uretprobe(name=path, sym=symbol, pid=attached.pid)
            else:
                bpf.detach_uprobe(name=path, sym=symbol, pid=attached.pid, sym_off=offset)
        except Exception:  # noqa: BLE001 - already gone
            pass

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, attached.probes))
    attached.probes.clear()
