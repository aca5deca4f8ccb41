"""Allocation stacks: the code mappings seen while recording, and symbols for the frames.

The kernel hands over each allocation's user stack as raw addresses (frame-pointer unwinding,
captured at the allocation's return, where the instruction pointer is the caller's). Addresses
only mean something against the process's mappings, which vanish when it exits, so the recorder
keeps every executable file mapping it sees in /proc/PID/maps while the process lives; at the end
each frame becomes (module, build-id, file offset, symbol) and is stored in the trace, so a
replay on another machine shows the same frames.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from tracer.record import procfs


@dataclass(frozen=True)
class CodeMapping:
    start: int
    end: int
    offset: int
    path: str


@dataclass
class MapsWatcher:
    """Every executable file mapping of one process, as seen over the recording."""

    pid: int
    seen: set[CodeMapping] = field(default_factory=set)

    def poll(self) -> None:
        try:
            maps = procfs.read_maps(self.pid)
        except procfs.ProcessGone:
            return
        for m in maps:
            if "x" in m.perms and m.path.startswith("/"):
                self.seen.add(CodeMapping(m.start, m.end, m.offset, m.path))


@dataclass
class _Symbols:
    starts: list[int]
    ends: list[int]
    names: list[str]
    loads: list[tuple[int, int, int]]  # (file offset, size, vaddr) of PT_LOAD segments
    build_id: str | None
    frame_pointers: bool | None


@lru_cache(maxsize=64)
def _symbols(path: str) -> _Symbols | None:
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            segments = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
            loads = [(s["p_offset"], s["p_filesz"], s["p_vaddr"]) for s in segments]
            funcs: dict[int, tuple[int, str]] = {}
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if sec is None:
                    continue
                for sym in sec.iter_symbols():
                    if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                        funcs.setdefault(sym["st_value"], (sym["st_size"], sym.name.split("@")[0]))
            build_id = None
            for sec in elf.iter_sections():
                if sec["sh_type"] == "SHT_NOTE":
                    for note in sec.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            build_id = note["n_desc"]
            fp = _uses_frame_pointers(elf, funcs)
    except (OSError, ELFError, ValueError):
        return None
    order = sorted(funcs.items())
    return _Symbols(
        starts=[a for a, _ in order],
        ends=[a + max(s, 1) for a, (s, _) in order],
        names=[n for _, (_, n) in order],
        loads=loads,
        build_id=build_id,
        frame_pointers=fp,
    )


def _uses_frame_pointers(elf: ELFFile, funcs: dict[int, tuple[int, str]]) -> bool | None:
    """Whether the functions set up %rbp frames (push %rbp; mov %rsp,%rbp), by sampling a few."""
    text = elf.get_section_by_name(".text")
    if text is None or not funcs:
        return None
    base, data = text["sh_addr"], text.data()
    sample = [a for a in sorted(funcs) if base <= a < base + len(data)][:200]
    if not sample:
        return None
    with_fp = 0
    for a in sample:
        code = data[a - base : a - base + 8]
        if code.startswith(b"\xf3\x0f\x1e\xfa"):  # endbr64
            code = code[4:]
        with_fp += code.startswith(b"\x55\x48\x89\xe5")
    return with_fp / len(sample) >= 0.3


def frame_pointer_note(path: str) -> str | None:
    syms = _symbols(path)
    if syms is not None and syms.frame_pointers is False:
        return (f"{path} seems built without frame pointers: allocation stacks will stop short "
                "(rebuild with -fno-omit-frame-pointer)")
    return None


def symbolize(stacks: dict[int, list[int]], mappings: set[CodeMapping]) -> dict[str, Any]:
    """{"modules": [{path, build_id}], "stacks": {id: [[address, module, file offset, symbol], ...]}}."""
    maps = sorted(mappings, key=lambda m: m.start)
    starts = [m.start for m in maps]
    modules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    out: dict[str, list[list[Any]]] = {}
    for sid, addrs in stacks.items():
        frames = []
        for addr in addrs:
            i = bisect.bisect_right(starts, addr) - 1
            if i < 0 or addr >= maps[i].end:
                frames.append([addr, None, None, None])
                continue
            m = maps[i]
            off = addr - m.start + m.offset
            if m.path not in index:
                syms = _symbols(m.path)
                index[m.path] = len(modules)
                modules.append({"path": m.path, "build_id": syms.build_id if syms else None})
            frames.append([addr, index[m.path], off, _name_at(m.path, off)])
        out[str(sid)] = frames
    return {"modules": modules, "stacks": out}


def _name_at(path: str, file_offset: int) -> str | None:
    syms = _symbols(path)
    if syms is None:
        return None
    vaddr = next((v + file_offset - o for o, size, v in syms.loads if o <= file_offset < o + size), None)
    if vaddr is None:
        return None
    i = bisect.bisect_right(syms.starts, vaddr) - 1
    if i < 0 or vaddr >= syms.ends[i]:
        return None
    return f"{syms.names[i]}+{vaddr - syms.starts[i]:#x}"
