"""Entry-probe sites: the kernel's emulation rules, the prefix walk on synthetic code, and the real libraries."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

capstone = pytest.importorskip("capstone")
pytest.importorskip("elftools")

from elftools.elf.elffile import ELFFile  # noqa: E402

from tracer.record.backends.bpf.probesites import ProbeSite, choose_site, choose_sites, kernel_emulates, probeable  # noqa: E402

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")
NEW = (6, 18)
OLD = (6, 1)
BASE = 0x401000

WANTED: dict[str, tuple[str, ...]] = {
    "malloc": ("rdi",),
    "free": ("rdi",),
    "calloc": ("rdi", "rsi"),
    "realloc": ("rdi", "rsi"),
    "reallocarray": ("rdi", "rsi", "rdx"),
    "posix_memalign": ("rdi", "rsi", "rdx"),
    "aligned_alloc": ("rdi", "rsi"),
    "memalign": ("rdi", "rsi"),
    "valloc": ("rdi",),
    "pvalloc": ("rdi",),
    "malloc_trim": ("rdi",),
    "mallopt": ("rdi", "rsi"),
    "_Znwm": ("rdi",),
    "_Znam": ("rdi",),
    "_ZdlPv": ("rdi",),
    "_ZdaPv": ("rdi",),
    "_ZdlPvm": ("rdi", "rsi"),
    "_ZdaPvm": ("rdi", "rsi"),
    "_ZnwmSt11align_val_t": ("rdi", "rsi"),
    "_ZdlPvSt11align_val_t": ("rdi", "rsi"),
}


def system_lib(name: str) -> str | None:
    for d in LIB_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return os.path.realpath(path)
    return None


def libc_path() -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("/libc.so.6"):
                return line.split()[-1]
    pytest.skip("this Python does not map glibc's libc.so.6")


def glibc_version() -> str:
    fn = ctypes.CDLL(None).gnu_get_libc_version
    fn.restype = ctypes.c_char_p
    return fn().decode()


def site(hexcode: str, regs: tuple[str, ...] = ("rdi",), **kw: object) -> ProbeSite:
    return choose_site("f", bytes.fromhex(hexcode.replace(" ", "")), BASE, regs, kernel=NEW, **kw)  # type: ignore[arg-type]


# ---- what the kernel emulates ----------------------------------------------------------------


@pytest.mark.parametrize(
    "hexcode, emulated",
    [
        ("55", True),  # push %rbp
        ("4154", True),  # push %r12
        ("4853", False),  # rex.W push %rbx: not the one REX form the kernel takes
        ("ff7508", False),  # push 8(%rbp)
        ("5b", False),  # pop %rbx
        ("4885ff", False),  # test %rdi,%rdi
        ("4889f8", False),  # mov %rdi,%rax
        ("4883ec18", False),  # sub $0x18,%rsp
        ("f30f1efa", False),  # endbr64
        ("c3", False),  # ret
        ("ffe0", False),  # jmp *%rax
        ("7403", True),  # je rel8
        ("0f84bf000000", True),  # je rel32
        ("eb00", True),  # jmp rel8
        ("e900000000", True),  # jmp rel32
        ("e800000000", True),  # call rel32
        ("f2e900000000", True),  # bnd jmp
        ("667403", False),  # je with an operand-size prefix
        ("90", True),  # nop
        ("6690", True),  # xchg %ax,%ax
        ("0f1f4001", False),  # nopl 1(%rax): a nop, but not one of the kernel's
        ("662e0f1f840000000000", False),  # cs nopw: refused outright
    ],
)
def test_kernel_emulates(hexcode: str, emulated: bool) -> None:
    assert kernel_emulates(bytes.fromhex(hexcode), NEW) is emulated


def test_multibyte_nops_depend_on_the_kernel() -> None:
    for nop in ("0f1f00", "0f1f4000", "0f1f440000", "660f1f440000", "0f1f8000000000", "0f1f840000000000"):
        assert kernel_emulates(bytes.fromhex(nop), NEW)
        assert not kernel_emulates(bytes.fromhex(nop), OLD)


def test_segment_and_lock_prefixes_cannot_be_probed() -> None:
    assert not probeable(bytes.fromhex("662e0f1f840000000000"))
    assert not probeable(bytes.fromhex("f00fb115399b1300"))  # lock cmpxchg
    assert probeable(bytes.fromhex("64488b042528000000"))  # %fs: is fine


# ---- the prefix walk on synthetic code --------------------------------------------------------


def test_entry_emulated_stays_at_entry() -> None:
    s = site("55 4889e5 5d c3")  # push %rbp; mov %rsp,%rbp; pop %rbp; ret
    assert (s.offset, s.emulated, s.instruction) == (0, True, "push %rbp")


def test_moves_to_the_jcc_after_a_test() -> None:
    s = site("4885ff 0f8401000000 c3 c3")  # test %rdi,%rdi; je +1; ret; ret
    assert (s.offset, s.emulated) == (3, True)
    assert s.instruction.startswith("je ")
    assert s.reason.startswith("test %rdi,%rdi at +0 would be single-stepped; je ")
    assert "rdi is intact and no branch targets +1..+3" in s.reason


def test_clobbered_argument_refuses_the_later_site() -> None:
    code = "4881ff00100000 bf01000000 7401 c3 c3"  # cmp $0x1000,%rdi; mov $1,%edi; je +1; ret; ret
    s = site(code)
    assert (s.offset, s.emulated) == (0, False)
    assert "rdi is overwritten" in s.reason and "mov $1,%edi at +7" in s.reason
    other = site(code, regs=("rsi",))  # a probe that does not read rdi can move
    assert (other.offset, other.emulated) == (12, True)


def test_partial_and_implicit_writes_clobber() -> None:
    # mov %rsi,%rax; mul %rdx (writes rdx:rax); jo +1; ret; ret
    s = site("4889f0 48f7e2 7001 c3 c3", regs=("rdi", "rsi", "rdx"))
    assert s.offset == 0 and "rdx is overwritten" in s.reason
    s = site("4088f7 7401 c3 c3")  # mov %sil,%dil
    assert s.offset == 0 and "rdi is overwritten" in s.reason


def test_branch_back_into_the_prefix_falls_back() -> None:
    # test %rdi,%rdi; je +3 (to 8); jmp back to +3; ret; ret
    s = site("4885ff 7403 ebfc c3 c3")
    assert (s.offset, s.emulated) == (0, False)
    assert "the branch at +5 jumps to +3" in s.reason
    # a branch back to the entry itself is fine: the probe fires again, as a fresh call would
    s = site("4885ff 7403 ebf9 c3 c3")
    assert s.offset == 3


def test_branch_from_outside_the_function_falls_back() -> None:
    assert site("4885ff 7401 c3 c3").offset == 3
    s = site("4885ff 7401 c3 c3", outside_targets=[BASE + 3])
    assert s.offset == 0 and "outside the function" in s.reason


def test_ret_before_any_emulated_instruction_keeps_the_entry() -> None:
    s = site("4889f8 c3")  # mov %rdi,%rax; ret
    assert (s.offset, s.emulated, s.instruction) == (0, False, "mov %rdi,%rax")
    assert "ret" in s.reason and "+3" in s.reason


def test_indirect_jump_ends_the_prefix() -> None:
    s = site("4885ff ffe0 7401 c3")  # test; jmp *%rax; ...
    assert s.offset == 0 and "jmp *%rax at +3" in s.reason


def test_undecodable_bytes_keep_the_entry() -> None:
    s = site("4885ff 7401 c3 06 c3")  # test; je; ret; (invalid in 64-bit mode); ret
    assert s.offset == 0 and "+6 do not decode" in s.reason
    s = site("4885ff 06 c3")
    assert s.offset == 0 and "data at +3" in s.reason


def test_stack_shift_counts_pushes_and_reservations() -> None:
    s = site("4883ec18 53 5b 4883c418 c3")  # sub $0x18,%rsp; push %rbx; ...
    assert (s.offset, s.stack_shift, s.return_probe_ok) == (4, 24, False)
    assert site("55 c3").return_probe_ok and site("4885ff 7401 c3 c3").return_probe_ok


def test_unsized_symbol_only_uses_an_emulated_entry() -> None:
    assert site("4885ff 7401 c3", sized=False).offset == 0
    assert site("55 c3", sized=False).emulated


# ---- the libraries of this machine ----------------------------------------------------------


def test_glibc_sites() -> None:
    path = libc_path()
    if glibc_version() != "2.36":
        pytest.skip(f"the expected sites are those of glibc 2.36, this is {glibc_version()}")
    sites = choose_sites(path, WANTED, kernel=NEW)
    assert not any(n.startswith("_Z") for n in sites)  # glibc has no operator new/delete
    free = sites["free"]
    assert (free.offset, free.emulated) == (3, True) and free.instruction.startswith("je ")
    assert free.reason.startswith("test %rdi,%rdi at +0 would be single-stepped")
    assert "cfree" in free.aliases
    malloc = sites["malloc"]
    assert (malloc.offset, malloc.emulated) == (0, True) and malloc.instruction.startswith("push ")
    assert sites["memalign"].address == sites["aligned_alloc"].address
    assert "aligned_alloc" in sites["memalign"].aliases and "memalign" in sites["aligned_alloc"].aliases
    assert sites["posix_memalign"].offset > 0 and sites["posix_memalign"].emulated
    # reallocarray multiplies into rdx before its first emulated instruction
    assert (sites["reallocarray"].offset, sites["reallocarray"].emulated) == (0, False)
    assert "rdx is overwritten" in sites["reallocarray"].reason
    for name, s in sites.items():
        assert s.function == name and s.symbol == name and s.address > 0
        if name != "reallocarray":
            assert s.emulated, s.reason
    assert_sane(sites, path)


def assert_sane(sites: dict[str, ProbeSite], path: str) -> None:
    """Every emulated site starts an instruction the kernel emulates; every alias shares the address."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for s in sites.values():
            f.seek(next(elf.address_offsets(s.address + s.offset)))
            insn = next(md.disasm(f.read(16), s.address + s.offset))
            assert kernel_emulates(bytes(insn.bytes), NEW) is s.emulated, s
            for alias in s.aliases:
                if alias in sites:
                    assert sites[alias].address == s.address


def test_jemalloc_sites() -> None:
    path = system_lib("libjemalloc.so.2")
    if path is None:
        pytest.skip("libjemalloc2 is not installed")
    sites = choose_sites(path, WANTED, kernel=NEW)
    assert {"malloc", "free", "calloc", "realloc", "_Znwm", "_ZdlPv"} <= set(sites)
    assert "reallocarray" not in sites and "mallopt" not in sites  # jemalloc does not export them
    assert sites["free"].offset > 0 and sites["free"].emulated  # entry is mov %rdi,%rax
    assert all(s.emulated for s in sites.values()), [s.reason for s in sites.values() if not s.emulated]
    assert_sane(sites, path)


def test_tcmalloc_sites() -> None:
    path = system_lib("libtcmalloc_minimal.so.4") or system_lib("libtcmalloc.so.4")
    if path is None:
        pytest.skip("tcmalloc (libtcmalloc-minimal4) is not installed")
    sites = choose_sites(path, WANTED, kernel=NEW)
    assert sites["free"].emulated and sites["malloc"].emulated
    assert {"_ZdlPv", "_ZdaPv"} <= set(sites["free"].aliases)  # operator delete is free
    assert_sane(sites, path)


def test_mimalloc_sites() -> None:
    path = system_lib("libmimalloc.so.2")
    if path is None:
        pytest.skip("mimalloc (libmimalloc2.0) is not installed")
    sites = choose_sites(path, WANTED, kernel=NEW)
    assert sites["free"].offset > 0 and sites["free"].emulated
    # mi_malloc loads the thread's heap into rdi before its first branch
    assert sites["malloc"].offset == 0 and "rdi is overwritten" in sites["malloc"].reason
    assert_sane(sites, path)


def test_not_an_elf_object(tmp_path: Path) -> None:
    p = tmp_path / "x.so"
    p.write_bytes(b"not an ELF file at all")
    with pytest.raises(ValueError):
        choose_sites(str(p), WANTED)
