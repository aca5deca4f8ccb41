"""Where to put the entry uprobe of each allocator function.

A uprobe replaces one instruction with ``int3``. When it fires, the kernel must still execute the
instruction it replaced. A few x86-64 instructions it *emulates* (updates the registers itself and
returns to user space); every other one is copied to a per-process page and *single-stepped*
there, which costs a second trap and a second return to user space. Measured on Linux 6.18 with an
empty BPF program, a hit costs about 0.5 us on an emulated instruction and 5 to 6.5 us on a
single-stepped one; every allocator call is probed, so the site matters.

What Linux emulates (``arch/x86/kernel/uprobes.c``, ``branch_setup_xol_ops`` and
``push_setup_xol_ops``, 64-bit tasks):

* relative ``jmp`` (``eb``, ``e9``), relative ``call`` (``e8``) and every ``jcc`` (``70``-``7f``,
  ``0f 80``-``0f 8f``), unless they carry an operand-size (``66``) prefix;
* ``nop`` (opcode ``90`` with any prefixes, e.g. ``66 90``);
* ``push`` of a 64-bit register: ``50``-``57`` alone or with the single REX prefix ``41``
  (``push %r8``..``push %r15``); ``push`` of anything else (immediate, memory) is single-stepped;
* since Linux 6.16, the canonical multi-byte nops of ``x86_nops[]`` (``0f 1f 00`` ...
  ``0f 1f 84 00 00 00 00 00``, and ``66``-prefixed forms), compared byte for byte.

Anything with an ES/CS/SS/DS segment prefix or ``lock`` cannot be probed at all (the probe is
accepted, never installed, and never fires). Everything else (``test``, ``cmp``, ``mov``, ``sub``,
``pop``, ``endbr64``, ``ret``, indirect branches...) is single-stepped. Timing one probe on each of
these instruction forms in turn agrees with this list exactly.

The algorithm, per function (``choose_site``):

1. Disassemble the symbol from its start over its ``st_size`` with capstone.
2. Walk the straight-line prefix from the entry: instructions that execute on *every* call, i.e.
   up to and including the first control transfer. Take the first instruction the kernel emulates.
   If that is the entry itself, use offset 0. If a control transfer the kernel does not emulate
   (``ret``, indirect ``jmp``/``call``, ``syscall``...) or the end of the function comes first,
   keep the entry (offset 0, ``emulated=False``).
3. Refuse a later site if an instruction before it writes one of the registers the probe reads
   (capstone's ``regs_access``; any write to any part of a register counts, ``%edi`` zero-extends
   into ``%rdi``), or if any direct branch targets an address in ``(entry, site]``: a loop back
   into the prefix would run the site twice per call. Branches inside the function are decoded
   properly; ``rel32`` jumps and calls from the rest of the object (e.g. a ``.cold`` part jumping
   back) are found by a byte scan of the executable segments, which can only err towards the
   entry. Both checks only grow with the site, so refusing the first emulated instruction means
   the entry is used.

A site after ``push``/``sub $n,%rsp`` sees a lower ``%rsp`` than the entry did: ``stack_shift`` says by
how many bytes (``None`` when it cannot be computed), so a probe comparing stack depths can add it
back. A return probe is an ordinary uprobe that swaps the return address at ``(%rsp)`` when it
fires, so it too pays for single-stepping when it sits on the entry. Where ``stack_shift`` is 0 the
return address is still at ``(%rsp)``, and the return probe can share the entry probe's site
(``return_probe_ok``): one emulated trap per call instead of two, one of them single-stepped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import capstone
import numpy as np
from elftools.elf.elffile import ELFFile

from tracer.record.backends.bpf.catalogue import ALLOCATOR_FUNCTIONS

#: Canonical x86-64 nops the kernel compares instructions with (``x86_nops[1..8]``).
_KERNEL_NOPS: frozenset[bytes] = frozenset(
    bytes.fromhex(h)
    for h in ("90", "6690", "0f1f00", "0f1f4000", "0f1f440000", "660f1f440000", "0f1f8000000000", "0f1f840000000000")
)
_LEGACY_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
_UNPROBEABLE_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0xF0})
_STOP_GROUPS = frozenset(
    {capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET, capstone.CS_GRP_INT, capstone.CS_GRP_IRET}
)
_STOP_MNEMONICS = frozenset({"ud2", "hlt", "syscall", "sysenter"})
_MAX_UNSIZED = 64  # bytes read when a symbol has no size (only its entry can then be used)


@dataclass
class ProbeSite:
    function: str
    symbol: str
    address: int  # st_value: ELF virtual address of the function
    offset: int  # from ``address`` to the probed instruction (bcc's sym_off)
    emulated: bool  # the kernel emulates the probed instruction (no single-step)
    instruction: str
    reason: str
    aliases: list[str] = field(default_factory=list)
    stack_shift: int | None = 0  # bytes pushed or reserved on the stack before the site
    file_offset: int = -1  # where ``address`` is in the file (what a uprobe definition names)

    @property
    def return_probe_ok(self) -> bool:
        """A return probe may sit here too: %rsp still points at the return address."""
        return self.stack_shift == 0


def running_kernel() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _split(raw: bytes) -> tuple[list[int], int, bytes]:
    """Legacy prefixes, REX byte (0 when none) and the rest of an instruction."""
    i = 0
    while i < len(raw) and raw[i] in _LEGACY_PREFIXES:
        i += 1
    rex = raw[i] if i < len(raw) and 0x40 <= raw[i] <= 0x4F else 0
    return list(raw[:i]), rex, raw[i + (1 if rex else 0) :]


def probeable(raw: bytes) -> bool:
    """The kernel accepts a uprobe on this instruction (no segment override or lock prefix)."""
    return not any(p in _UNPROBEABLE_PREFIXES for p in _split(raw)[0])


def kernel_emulates(raw: bytes, kernel: tuple[int, int] | None = None) -> bool:
    """Whether Linux emulates this x86-64 instruction when a uprobe on it fires."""
    prefixes, rex, rest = _split(raw)
    if not rest or any(p in _UNPROBEABLE_PREFIXES for p in prefixes):
        return False
    if raw in _KERNEL_NOPS and (kernel or running_kernel()) >= (6, 16):
        return True
    op = rest[0]
    if op == 0x90:
        return True
    if op in (0xEB, 0xE9, 0xE8) or 0x70 <= op <= 0x7F or (op == 0x0F and len(rest) > 1 and 0x80 <= rest[1] <= 0x8F):
        return 0x66 not in prefixes
    if 0x50 <= op <= 0x57:
        return len(raw) == 1 or (len(raw) == 2 and rex == 0x41)
    return False


def _register_family(name: str) -> frozenset[str]:
    """Every name of the 64-bit register ``name`` and its parts."""
    legacy = {"ax": "a", "bx": "b", "cx": "c", "dx": "d"}
    idx = {"di": "di", "si": "si", "bp": "bp", "sp": "sp"}
    base = name[1:] if name.startswith("r") and not name[1:].isdigit() else name
    if base in legacy:
        c = legacy[base]
        return frozenset({f"r{c}x", f"e{c}x", f"{c}x", f"{c}l", f"{c}h"})
    if base in idx:
        return frozenset({f"r{base}", f"e{base}", base, f"{base}l"})
    if re.fullmatch(r"r\d+", name):
        return frozenset({name, f"{name}d", f"{name}w", f"{name}b"})
    return frozenset({name})


def _disassembler(syntax: int) -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    md.skipdata = True
    md.syntax = syntax
    return md


_ATT = _disassembler(capstone.CS_OPT_SYNTAX_ATT)
_INTEL = _disassembler(capstone.CS_OPT_SYNTAX_INTEL)


def _text(insn: capstone.CsInsn) -> str:
    """objdump-like AT&T text: no size suffix when a register operand gives the size."""
    mnemonic = insn.mnemonic
    if any(op.type == capstone.CS_OP_REG for op in insn.operands):
        intel = next(_INTEL.disasm(bytes(insn.bytes), insn.address), None)
        mnemonic = intel.mnemonic if intel is not None else mnemonic
    return f"{mnemonic} {insn.op_str.replace(', ', ',')}".strip()


def _target(insn: capstone.CsInsn) -> int | None:
    if capstone.CS_GRP_BRANCH_RELATIVE in insn.groups:
        for op in insn.operands:
            if op.type == capstone.CS_OP_IMM:
                return int(op.imm)
    return None


def _stack_change(insn: capstone.CsInsn) -> int | None:
    """Bytes this instruction moves %rsp down by (negative: up), or None when not a constant."""
    m = insn.mnemonic
    if m in ("pushq", "pushfq"):
        return 8
    if m in ("popq", "popfq"):
        return -8
    if m in ("subq", "addq") and insn.op_str.endswith("%rsp") and insn.op_str.startswith("$"):
        n = int(insn.op_str[1:].split(",")[0], 0)
        return n if m == "subq" else -n
    return None


def _pos(n: int) -> str:
    return f"+{n}"


def choose_site(
    function: str,
    code: bytes,
    address: int,
    registers: Iterable[str],
    *,
    symbol: str | None = None,
    aliases: Iterable[str] = (),
    outside_targets: Iterable[int] = (),
    sized: bool = True,
    kernel: tuple[int, int] | None = None,
) -> ProbeSite:
    """The entry-probe site of one function whose machine code is ``code``, loaded at ``address``.

    ``outside_targets`` are addresses that code outside the function branches to.
    """
    kernel = kernel or running_kernel()
    regs = tuple(registers)
    insns = list(_ATT.disasm(code, address))
    site = ProbeSite(function, symbol or function, address, 0, False, "", "", list(aliases), 0)
    if not insns or insns[0].id == 0:
        site.reason = "its first bytes do not disassemble, so the probe stays at the entry"
        return site
    first = insns[0]
    site.instruction = _text(first)
    if kernel_emulates(bytes(first.bytes), kernel):
        site.emulated = True
        site.reason = f"{site.instruction} at +0 is emulated"
        return site
    if probeable(bytes(first.bytes)):
        lead = f"{site.instruction} at +0 would be single-stepped"
    else:
        lead = f"{site.instruction} at +0 cannot be probed (segment or lock prefix)"
    if not sized:
        site.reason = f"{lead}; the symbol has no size, so nothing can be checked and the probe stays at the entry"
        return site
    wanted = {r: _register_family(r) for r in regs}
    clobbered: dict[str, str] = {}
    shift: int | None = 0
    for insn in insns:
        off = insn.address - address
        if insn.id == 0:
            site.reason = f"{lead}; data at {_pos(off)} ends the prefix, so the probe stays at the entry"
            return site
        raw = bytes(insn.bytes)
        if off and kernel_emulates(raw, kernel):
            text = _text(insn)
            if clobbered:
                reg, where = next(iter(clobbered.items()))
                site.reason = f"{lead}; {text} at {_pos(off)} is emulated but {reg} is overwritten before it ({where})"
                return site
            data = next((i.address - address for i in insns if i.id == 0), None)
            if data is not None:
                site.reason = (
                    f"{lead}; {text} at {_pos(off)} is emulated but bytes at {_pos(data)} do not decode, so a branch "
                    "back into the prefix cannot be ruled out"
                )
                return site
            back = [(i.address, t) for i in insns if (t := _target(i)) is not None and address < t <= insn.address]
            back += [(None, t) for t in outside_targets if address < t <= insn.address]
            if back:
                src, t = back[0]
                origin = f"the branch at {_pos(src - address)}" if src is not None else "a branch outside the function"
                site.reason = f"{lead}; {text} at {_pos(off)} is emulated but {origin} jumps to {_pos(t - address)}"
                return site
            where = f"+1..{_pos(off)}" if off > 1 else "+1"
            intact = ", ".join(regs) + (" are" if len(regs) > 1 else " is") if regs else "no register is read"
            site.offset, site.emulated, site.instruction, site.stack_shift = off, True, text, shift
            site.reason = f"{lead}; {text} at {_pos(off)} is emulated; {intact} intact and no branch targets {where}"
            return site
        if set(insn.groups) & _STOP_GROUPS or insn.mnemonic in _STOP_MNEMONICS:
            text = _text(insn)
            site.reason = f"{lead}; {text} at {_pos(off)} ends the prefix before any emulated instruction"
            return site
        try:
            written = {insn.reg_name(r) for r in insn.regs_access()[1]}
        except capstone.CsError:
            written = {n for fam in wanted.values() for n in fam} | {"rsp"}
        for reg, fam in wanted.items():
            if reg not in clobbered and written & fam:
                clobbered[reg] = f"{_text(insn)} at {_pos(off)}"
        if shift is not None and written & _register_family("rsp"):
            change = _stack_change(insn)
            shift = None if change is None else shift + change
    site.reason = f"{lead}; the function ends before any emulated instruction"
    return site


def _load_segments(elf: ELFFile) -> list[tuple[int, int, bytes, bool]]:
    """(vaddr, file offset, bytes in the file, executable) of every PT_LOAD segment."""
    out = []
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD":
            out.append((seg["p_vaddr"], seg["p_offset"], seg.data(), bool(seg["p_flags"] & 1)))
    return out


def _file_offset(segments: list[tuple[int, int, bytes, bool]], vaddr: int) -> int:
    for base, offset, data, _ in segments:
        if base <= vaddr < base + len(data):
            return offset + vaddr - base
    return -1


def _read_at(segments: list[tuple[int, int, bytes, bool]], vaddr: int, size: int) -> bytes | None:
    for base, _, data, _ in segments:
        if base <= vaddr < base + len(data):
            return data[vaddr - base : vaddr - base + size]
    return None


def _rel32_branches(segments: list[tuple[int, int, bytes, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) of every byte pattern that decodes as a rel32 jmp/call/jcc in executable code."""
    sources, targets = [], []
    for base, _, data, execute in segments:
        if not execute or len(data) < 6:
            continue
        b = np.frombuffer(data, dtype=np.uint8)
        n = len(b)
        for start, width in (
            (np.flatnonzero((b[: n - 4] == 0xE8) | (b[: n - 4] == 0xE9)), 1),
            (np.flatnonzero((b[: n - 5] == 0x0F) & ((b[1 : n - 4] & 0xF0) == 0x80)), 2),
        ):
            d = start + width
            disp = (b[d].astype(np.int64) | b[d + 1].astype(np.int64) << 8 | b[d + 2].astype(np.int64) << 16
                    | b[d + 3].astype(np.int64) << 24)  # fmt: skip
            disp = np.where(disp >= 1 << 31, disp - (1 << 32), disp)
            sources.append(base + start)
            targets.append(base + d + 4 + disp)
    if not sources:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(sources), np.concatenate(targets)


def _function_symbols(elf: ELFFile) -> dict[str, list[tuple[int, int, str]]]:
    """name -> [(st_value, st_size, type)] of defined functions in .dynsym and .symtab."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for name in (".dynsym", ".symtab"):
        sec = elf.get_section_by_name(name)
        if sec is None:
            continue
        for sym in sec.iter_symbols():
            kind = sym["st_info"]["type"]
            if sym["st_shndx"] == "SHN_UNDEF" or kind not in ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS"):
                continue
            if sym["st_info"]["bind"] == "STB_LOCAL" or not sym.name:
                continue
            entry = (sym["st_value"], sym["st_size"], kind)
            if entry not in out.setdefault(sym.name, []):
                out[sym.name].append(entry)
    return out


def choose_sites(
    lib_path: str, wanted: dict[str, tuple[str, ...]], *, kernel: tuple[int, int] | None = None
) -> dict[str, ProbeSite]:
    """Entry-probe sites of the ``wanted`` functions (name -> registers its probe reads) in one ELF object.

    Functions the object does not define are left out, and so are GNU indirect functions (their
    symbol is the resolver, not the allocator).
    """
    with open(lib_path, "rb") as f:
        try:
            elf = ELFFile(f)
            machine = elf["e_machine"]
            symbols = _function_symbols(elf)
            segments = _load_segments(elf)
        except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere in the parser
            raise ValueError(f"{lib_path} is not a readable ELF object ({e})") from e
    if machine != "EM_X86_64":
        raise ValueError(f"{lib_path} is not x86-64 code")
    names_at: dict[int, list[str]] = {}
    for name in sorted(set(ALLOCATOR_FUNCTIONS) | set(wanted)):
        for value, _, _ in symbols.get(name, []):
            names_at.setdefault(value, []).append(name)
    sources = targets = None
    out: dict[str, ProbeSite] = {}
    for function, regs in wanted.items():
        entries = [e for e in symbols.get(function, []) if e[2] == "STT_FUNC"]
        if not entries:
            continue
        value, size, _ = max(entries, key=lambda e: e[1])
        code = _read_at(segments, value, size or _MAX_UNSIZED)
        if not code:
            continue
        if sources is None:
            sources, targets = _rel32_branches(segments)
        inside = (sources >= value) & (sources < value + max(size, 1))
        near = (targets > value) & (targets < value + max(size, 1)) & ~inside
        aliases = [n for n in names_at.get(value, []) if n != function]
        out[function] = choose_site(
            function, code, value, regs, aliases=aliases, outside_targets=targets[near].tolist(),
            sized=size > 0, kernel=kernel,
        )  # fmt: skip
        out[function].file_offset = _file_offset(segments, value)
    return out
