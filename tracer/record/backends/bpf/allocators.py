"""Which ELF object serves ``malloc`` in a target: the one whose functions the uprobes go on.

The dynamic linker binds ``malloc`` to the first object in the global search list that defines it:
the executable, then the ``LD_PRELOAD`` objects (and ``/etc/ld.so.preload``), then the executable's
dependencies breadth first. Objects added later with ``dlopen`` come after all of those. So:

* for a running process (``find_for_pid``), the mapped objects come from ``/proc/PID/maps``, the
  preloads from ``/proc/PID/environ``, and the dependency order from each object's ``DT_NEEDED``;
* before a program runs (``find_for_launch``), the loader named by the program's ``PT_INTERP``
  lists what it would load, in order, with the program's environment (``ld.so --list PROG``,
  which is what ``ldd`` runs).

The first object that defines both ``malloc`` and ``free`` wins (failing that, the first that
defines ``malloc``). Its family comes from what it defines (jemalloc exports ``mallocx``, tcmalloc
``tc_malloc``, mimalloc ``mi_malloc``, glibc ``__libc_malloc``) or, for an allocator built into an
executable, from the strings it carries.
"""

from __future__ import annotations

import mmap
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from elftools.elf.elffile import ELFFile
from elftools.elf.hash import ELFHashSection, GNUHashSection

from tracer.errors import HeaplineError
from tracer.record.backends.bpf.catalogue import ALLOCATOR_FUNCTIONS

FAMILIES = ("glibc", "jemalloc", "tcmalloc", "mimalloc", "musl", "unknown")
# a symbol only one family exports, then a string only one family carries
_FAMILY_SYMBOLS = (
    ("jemalloc", "mallocx"),
    ("tcmalloc", "tc_malloc"),
    ("mimalloc", "mi_malloc"),
    ("glibc", "__libc_malloc"),
)
_FAMILY_STRINGS = (
    ("jemalloc", b"<jemalloc>"),
    ("tcmalloc", b"TCMALLOC_"),
    ("mimalloc", b"mimalloc"),
    ("musl", b"musl libc"),
)
_LOOKUP = tuple(dict.fromkeys((*ALLOCATOR_FUNCTIONS, *(s for _, s in _FAMILY_SYMBOLS))))
_LIST_TIMEOUT = 20.0


class NoAllocator(HeaplineError):
    """No shared allocator can be probed in the target; ``reason`` is one sentence for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AllocatorLib:
    path: str  # to open from heapline's mount namespace
    shown_path: str  # as the target sees it
    family: str
    build_id: str | None
    exported: set[str] = field(default_factory=set)
    # allocator functions this library lacks, and the (path, shown_path) of the object that serves
    # each of them instead (jemalloc has no malloc_trim: glibc's answers the program's calls)
    elsewhere: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _Object:
    path: str
    shown: str
    soname: str | None = None
    needed: list[str] = field(default_factory=list)
    interp: str | None = None
    defined: set[str] = field(default_factory=set)
    build_id: str | None = None


def _lookup(elf: ELFFile, names: Iterable[str]) -> set[str]:
    """Which of ``names`` the object defines as dynamic symbols."""
    tables = [s for s in elf.iter_sections() if isinstance(s, GNUHashSection)]
    tables += [s for s in elf.iter_sections() if isinstance(s, ELFHashSection)]
    found = set()
    if tables:
        for name in names:
            sym = tables[0].get_symbol(name)
            if sym is not None and sym["st_shndx"] != "SHN_UNDEF":
                found.add(name)
        return found
    dynsym = elf.get_section_by_name(".dynsym")
    wanted = set(names)
    for sym in dynsym.iter_symbols() if dynsym is not None else ():
        if sym.name in wanted and sym["st_shndx"] != "SHN_UNDEF":
            found.add(sym.name)
    return found


def _parse(f: BinaryIO, path: str, shown: str) -> _Object:
    magic = f.read(4)
    if magic.startswith(b"#!"):
        raise NoAllocator(f"{shown} is a script, not an ELF program; trace the program that runs it instead.")
    if magic != b"\x7fELF":
        raise NoAllocator(f"{shown} is not an ELF program or library.")
    f.seek(0)
    elf = ELFFile(f)
    if elf["e_machine"] != "EM_X86_64" or elf.elfclass != 64:
        raise NoAllocator(f"{shown} is not x86-64 code; heapline probes allocators only in x86-64 programs.")
    obj = _Object(path=path, shown=shown)
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_INTERP":
            obj.interp = seg.get_interp_name()
        elif seg["p_type"] == "PT_NOTE":
            for note in seg.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    obj.build_id = note["n_desc"]
    dynamic = elf.get_section_by_name(".dynamic")
    for tag in dynamic.iter_tags() if dynamic is not None else ():
        if tag.entry.d_tag == "DT_NEEDED":
            obj.needed.append(tag.needed)
        elif tag.entry.d_tag == "DT_SONAME":
            obj.soname = tag.soname
    obj.defined = _lookup(elf, _LOOKUP)
    return obj


def _read(path: str, shown: str) -> _Object:
    """The facts about one ELF object, or NoAllocator with the reason it cannot be read."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise NoAllocator(f"Cannot read {shown}: {e.strerror or e}.") from e
    with f:
        try:
            return _parse(f, path, shown)
        except NoAllocator:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere in the parser
            raise NoAllocator(f"{shown} is not a readable ELF file (it looks truncated or damaged).") from e


def _family(obj: _Object) -> str:
    for family, symbol in _FAMILY_SYMBOLS:
        if symbol in obj.defined:
            return family
    base = os.path.basename(obj.shown)
    if "musl" in base:
        return "musl"
    try:
        with open(obj.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for family, marker in _FAMILY_STRINGS:
                if m.find(marker) >= 0:
                    return family
    except (OSError, ValueError):
        pass
    return "unknown"


def _result(obj: _Object) -> AllocatorLib:
    exported = {n for n in ALLOCATOR_FUNCTIONS if n in obj.defined}
    return AllocatorLib(
        path=obj.path, shown_path=obj.shown, family=_family(obj), build_id=obj.build_id, exported=exported
    )


def _static(name: str) -> NoAllocator:
    return NoAllocator(
        f"{name} is statically linked: its malloc is built into the program, and heapline probes allocators only in "
        "shared libraries."
    )


def _pick(order: list[_Object], name: str) -> AllocatorLib:
    """The object the dynamic linker binds malloc to, given the global search order."""
    for need in ({"malloc", "free"}, {"malloc"}):
        for obj in order:
            if need <= obj.defined:
                lib = _result(obj)
                for fn in ALLOCATOR_FUNCTIONS:
                    if fn in obj.defined or fn.startswith("_Z"):  # C++ operators elsewhere call malloc
                        continue
                    other = next((o for o in order if fn in o.defined), None)
                    if other is not None:
                        lib.elsewhere[fn] = (other.path, other.shown)
                return lib
    raise NoAllocator(f"None of the objects {name} loads exports malloc, so there is no allocator to probe.")


def _split_preload(value: str) -> list[str]:
    return [p for p in value.replace(":", " ").split() if p]


# ---- a program before it runs ------------------------------------------------------------------


def _listed_paths(output: str) -> list[str]:
    """Object paths from ``ld.so --list`` output, in load order (the vdso and missing ones left out)."""
    paths = []
    for line in output.splitlines():
        line = line.strip()
        if "=>" in line:
            line = line.split("=>", 1)[1].strip()
        path = line.rsplit(" (0x", 1)[0].strip()
        if path.startswith("/"):
            paths.append(path)
    return paths


SCRIPT_DEPTH = 4  # interpreters that are scripts themselves: the kernel follows this many (BINPRM_MAX_RECURSION)


def script_interpreter(path: str) -> str | None:
    """The interpreter the kernel runs for ``path`` when it is a script (the first word of its
    ``#!`` line, which the kernel reads from the first 256 bytes), or None for any other file."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None  # _read says why
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        raise NoAllocator(f"{path} is a script whose #! line names no interpreter.")
    return os.fsdecode(words[0])


def find_for_launch(path: str, env: Mapping[str, str] | None = None) -> AllocatorLib:
    """The library that will serve malloc when ``path`` runs with environment ``env``. For a
    script, that of the program the kernel runs for it (``#!/bin/sh``: sh's; ``#!/usr/bin/env
    python3``: env's, which the program env then execs uses too when it loads the same library)."""
    env = dict(os.environ if env is None else env)
    script = path
    for _ in range(SCRIPT_DEPTH + 1):
        interp = script_interpreter(path)
        if interp is None:
            break
        path = interp
    else:
        raise NoAllocator(f"{script} is run by scripts nested more than {SCRIPT_DEPTH} deep; the kernel refuses it.")
    name = os.path.basename(path) or path
    exe = _read(path, path)
    if exe.interp is None:
        raise _static(name)
    loader = exe.interp
    if not os.access(loader, os.X_OK):
        raise NoAllocator(f"{name} needs the loader {loader}, which is not installed here.")
    try:
        proc = subprocess.run(
            [loader, "--list", path], env=env, capture_output=True, text=True, errors="replace", timeout=_LIST_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NoAllocator(f"Cannot ask the loader {loader} which libraries {name} loads ({e}).") from e
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.splitlines() if x.strip() and "cannot be preloaded" not in x]
        why = lines[-1].split("error while loading shared libraries: ", 1)[-1] if lines else f"exit {proc.returncode}"
        raise NoAllocator(f"The loader cannot start {name}: {why.rstrip('.')}.")
    order = [exe]
    seen = {os.path.realpath(path)}
    for lib in _listed_paths(proc.stdout):
        real = os.path.realpath(lib)
        if real in seen:
            continue
        seen.add(real)
        try:
            order.append(_read(lib, lib))
        except NoAllocator:
            continue
    return _pick(order, name)


# ---- a running process -------------------------------------------------------------------------


def _proc(pid: int, what: str) -> str:
    with open(f"/proc/{pid}/{what}", "rb") as f:
        return f.read().decode("utf-8", "replace")


def _mapped_objects(pid: int) -> list[tuple[str, int, str]]:
    """(shown path, inode, address range) of every file with executable code mapped, in maps order."""
    out: dict[str, tuple[str, int, str]] = {}
    for line in _proc(pid, "maps").splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        shown = parts[5].strip()
        if shown.endswith(" (deleted)"):
            shown = shown[: -len(" (deleted)")]
        out.setdefault(shown, (shown, int(parts[4]), parts[0]))
    return list(out.values())


def _openable(pid: int, shown: str, inode: int, span: str, same_ns: bool) -> str:
    """A path heapline can open for the object the target maps at ``span``."""
    for cand in (shown if same_ns else f"/proc/{pid}/root{shown}", f"/proc/{pid}/map_files/{span}"):
        try:
            if os.stat(cand).st_ino == inode:
                return cand
        except OSError:
            continue
    return shown if same_ns else f"/proc/{pid}/root{shown}"


def _same_mount_ns(pid: int) -> bool:
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return True


def _preloads(pid: int, same_ns: bool) -> list[str]:
    names: list[str] = []
    try:
        for item in _proc(pid, "environ").split("\0"):
            if item.startswith("LD_PRELOAD="):
                names += _split_preload(item[len("LD_PRELOAD=") :])
    except OSError:
        pass
    root = "" if same_ns else f"/proc/{pid}/root"
    try:
        with open(f"{root}/etc/ld.so.preload", encoding="utf-8", errors="replace") as f:
            names += _split_preload(f.read())
    except OSError:
        pass
    return names


def find_for_pid(pid: int) -> AllocatorLib:
    """The library that serves malloc in the running process ``pid``."""
    try:
        exe_shown = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        mapped = _mapped_objects(pid)
    except FileNotFoundError as e:
        if os.path.isdir(f"/proc/{pid}"):
            raise NoAllocator(f"Process {pid} runs no program file (it is a kernel thread or exiting).") from e
        raise NoAllocator(f"Process {pid} does not exist.") from e
    except PermissionError as e:
        raise NoAllocator(f"Not allowed to read the memory map of process {pid}.") from e
    except OSError as e:
        raise NoAllocator(f"Cannot inspect process {pid}: {e.strerror or e}.") from e
    name = f"process {pid} ({os.path.basename(exe_shown)})"
    same_ns = _same_mount_ns(pid)
    objects: list[_Object] = []
    exe: _Object | None = None
    for shown, inode, span in mapped:
        try:
            obj = _read(_openable(pid, shown, inode, span, same_ns), shown)
        except NoAllocator:
            if shown == exe_shown:
                raise
            continue
        objects.append(obj)
        if shown == exe_shown:
            exe = obj
    if exe is None:
        exe = _read(f"/proc/{pid}/exe", exe_shown)
        objects.insert(0, exe)
    if exe.interp is None and len(objects) == 1:
        raise _static(name)

    def named(n: str) -> _Object | None:
        for obj in objects:
            keys = {obj.shown, obj.soname, os.path.basename(obj.shown)}
            if n in keys or os.path.basename(n) in keys:
                return obj
        return None

    order = [exe]
    for n in _preloads(pid, same_ns):
        obj = named(n)
        if obj is not None and obj not in order:
            order.append(obj)
    queue = list(order)
    while queue:
        for n in queue.pop(0).needed:
            obj = named(n)
            if obj is not None and obj not in order:
                order.append(obj)
                queue.append(obj)
    order += [obj for obj in objects if obj not in order]
    return _pick(order, name)
