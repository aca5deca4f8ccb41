"""Constants of the memory syscalls, decoded to text exactly the way ``strace`` prints them.

Pure functions, no I/O. The tables follow strace's xlat tables for x86_64 (their order is the order
strace prints flags in); values newer than the installed strace are named as current strace does.
"""

from __future__ import annotations

import os
import signal

import numpy as np

from tracer.events import PAGES_EXTENT, Kind
from tracer.fields import ERRNO_MAX

MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def _bits(spec: str) -> tuple[tuple[int, str], ...]:
    """``"NAME=0x1 OTHER=0x2"`` -> ((0x1, "NAME"), (0x2, "OTHER")), keeping the order."""
    pairs = (item.split("=") for item in spec.split())
    return tuple((int(v, 0), n) for n, v in pairs)


# --- mmap / mprotect protection bits -------------------------------------------------------------

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x0100_0000
PROT_GROWSUP = 0x0200_0000

PROT_BITS: tuple[tuple[int, str], ...] = (
    (PROT_READ, "PROT_READ"),
    (PROT_WRITE, "PROT_WRITE"),
    (PROT_EXEC, "PROT_EXEC"),
    (PROT_SEM, "PROT_SEM"),
    (PROT_GROWSDOWN, "PROT_GROWSDOWN"),
    (PROT_GROWSUP, "PROT_GROWSUP"),
)

# --- mmap flags ------------------------------------------------------------------------------------

MAP_TYPE = 0x0F
MAP_FILE = 0x0
MAP_SHARED = 0x1
MAP_PRIVATE = 0x2
MAP_SHARED_VALIDATE = 0x3
MAP_DROPPABLE = 0x8
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_32BIT = 0x40
MAP_ABOVE4G = 0x80
MAP_GROWSDOWN = 0x100
MAP_DENYWRITE = 0x800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x400_0000  # shares bit 26 with the huge page size field, as strace shows
MAP_HUGE_SHIFT = 26
MAP_HUGE_MASK = 0x3F
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT
MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT

#: The mapping type (``flags & MAP_TYPE``); MAP_FILE is the zero value strace prints for type 0.
MAP_TYPES: dict[int, str] = {
    MAP_FILE: "MAP_FILE",
    MAP_SHARED: "MAP_SHARED",
    MAP_PRIVATE: "MAP_PRIVATE",
    MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE",
    MAP_DROPPABLE: "MAP_DROPPABLE",
}

MAP_BITS: tuple[tuple[int, str], ...] = (
    (MAP_FIXED, "MAP_FIXED"),
    (MAP_ANONYMOUS, "MAP_ANONYMOUS"),
    (MAP_32BIT, "MAP_32BIT"),
    (MAP_ABOVE4G, "MAP_ABOVE4G"),
    (MAP_NORESERVE, "MAP_NORESERVE"),
    (MAP_POPULATE, "MAP_POPULATE"),
    (MAP_NONBLOCK, "MAP_NONBLOCK"),
    (MAP_GROWSDOWN, "MAP_GROWSDOWN"),
    (MAP_DENYWRITE, "MAP_DENYWRITE"),
    (MAP_EXECUTABLE, "MAP_EXECUTABLE"),
    (MAP_LOCKED, "MAP_LOCKED"),
    (MAP_STACK, "MAP_STACK"),
    (MAP_HUGETLB, "MAP_HUGETLB"),
    (MAP_SYNC, "MAP_SYNC"),
    (MAP_UNINITIALIZED, "MAP_UNINITIALIZED"),
    (MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
)

# --- mremap flags ----------------------------------------------------------------------------------

MREMAP_MAYMOVE = 0x1
MREMAP_FIXED = 0x2
MREMAP_DONTUNMAP = 0x4

MREMAP_BITS: tuple[tuple[int, str], ...] = (
    (MREMAP_MAYMOVE, "MREMAP_MAYMOVE"),
    (MREMAP_FIXED, "MREMAP_FIXED"),
    (MREMAP_DONTUNMAP, "MREMAP_DONTUNMAP"),
)

# --- madvise advice --------------------------------------------------------------------------------

MADVISE: dict[str, int] = {
    n: v
    for v, n in _bits(
        "MADV_NORMAL=0 MADV_RANDOM=1 MADV_SEQUENTIAL=2 MADV_WILLNEED=3 MADV_DONTNEED=4 MADV_FREE=8 "
        "MADV_REMOVE=9 MADV_DONTFORK=10 MADV_DOFORK=11 MADV_MERGEABLE=12 MADV_UNMERGEABLE=13 "
        "MADV_HUGEPAGE=14 MADV_NOHUGEPAGE=15 MADV_DONTDUMP=16 MADV_DODUMP=17 MADV_WIPEONFORK=18 "
        "MADV_KEEPONFORK=19 MADV_COLD=20 MADV_PAGEOUT=21 MADV_POPULATE_READ=22 MADV_POPULATE_WRITE=23 "
        "MADV_DONTNEED_LOCKED=24 MADV_COLLAPSE=25 MADV_HWPOISON=100 MADV_SOFT_OFFLINE=101 "
        "MADV_GUARD_INSTALL=102 MADV_GUARD_REMOVE=103"
    )
}
ADVICE_NAMES: dict[int, str] = {v: k for k, v in MADVISE.items()}

MADV_DONTNEED = MADVISE["MADV_DONTNEED"]
MADV_FREE = MADVISE["MADV_FREE"]
MADV_REMOVE = MADVISE["MADV_REMOVE"]
MADV_DONTNEED_LOCKED = MADVISE["MADV_DONTNEED_LOCKED"]

#: Advice after which the kernel may drop the pages (resident memory goes down).
RELEASE_ADVICE: frozenset[int] = frozenset({MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTNEED_LOCKED})

# --- mallopt parameters (glibc's malloc.h) -----------------------------------------------------------

M_MXFAST = 1
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_CHECK_ACTION = -5
M_PERTURB = -6
M_ARENA_TEST = -7
M_ARENA_MAX = -8
MALLOPT_PARAMS: dict[int, str] = {
    M_MXFAST: "M_MXFAST",
    M_TRIM_THRESHOLD: "M_TRIM_THRESHOLD",
    M_TOP_PAD: "M_TOP_PAD",
    M_MMAP_THRESHOLD: "M_MMAP_THRESHOLD",
    M_MMAP_MAX: "M_MMAP_MAX",
    M_CHECK_ACTION: "M_CHECK_ACTION",
    M_PERTURB: "M_PERTURB",
    M_ARENA_TEST: "M_ARENA_TEST",
    M_ARENA_MAX: "M_ARENA_MAX",
}

# --- clone flags -----------------------------------------------------------------------------------

CSIGNAL = 0xFF
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000

#: strace's clone_flags order; the last three exist only for clone3.
CLONE_BITS = _bits(
    "CLONE_VM=0x100 CLONE_FS=0x200 CLONE_FILES=0x400 CLONE_SIGHAND=0x800 CLONE_PIDFD=0x1000 "
    "CLONE_PTRACE=0x2000 CLONE_VFORK=0x4000 CLONE_PARENT=0x8000 CLONE_THREAD=0x10000 "
    "CLONE_NEWNS=0x20000 CLONE_SYSVSEM=0x40000 CLONE_SETTLS=0x80000 CLONE_PARENT_SETTID=0x100000 "
    "CLONE_CHILD_CLEARTID=0x200000 CLONE_UNTRACED=0x800000 CLONE_CHILD_SETTID=0x1000000 "
    "CLONE_NEWCGROUP=0x2000000 CLONE_NEWUTS=0x4000000 CLONE_NEWIPC=0x8000000 CLONE_NEWUSER=0x10000000 "
    "CLONE_NEWPID=0x20000000 CLONE_NEWNET=0x40000000 CLONE_IO=0x80000000 "
    "CLONE_CLEAR_SIGHAND=0x100000000 CLONE_INTO_CGROUP=0x200000000 CLONE_NEWTIME=0x80"
)
CLONE_FLAGS: dict[str, int] = {n: v for v, n in CLONE_BITS}

# --- errno -----------------------------------------------------------------------------------------

# strace's Linux errno names (src/linux/generic/errnoent.h); the gaps (41, 58) are unused numbers.
_ERRNO_LIST = (
    "EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES EFAULT ENOTBLK "
    "EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG ENOSPC ESPIPE "
    "EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY ELOOP - ENOMSG EIDRM "
    "ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE EBADR EXFULL ENOANO EBADRQC "
    "EBADSLT - EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE ENOLINK EADV ESRMNT ECOMM EPROTO "
    "EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX "
    "ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT "
    "EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL "
    "ENETDOWN ENETUNREACH ENETRESET ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN "
    "ETOOMANYREFS ETIMEDOUT ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN "
    "ENOTNAM ENAVAIL EISNAM EREMOTEIO EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED "
    "EKEYREVOKED EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"
).split()
ERRNO_NAMES: dict[int, str] = {i: n for i, n in enumerate(_ERRNO_LIST, start=1) if n != "-"}
ERRNO_NAMES.update(
    {
        512: "ERESTARTSYS",
        513: "ERESTARTNOINTR",
        514: "ERESTARTNOHAND",
        515: "ENOIOCTLCMD",
        516: "ERESTART_RESTARTBLOCK",
        517: "EPROBE_DEFER",
        518: "EOPENSTALE",
        521: "EBADHANDLE",
        522: "ENOTSYNC",
        523: "EBADCOOKIE",
        524: "ENOTSUPP",
        525: "ETOOSMALL",
        526: "ESERVERFAULT",
        527: "EBADTYPE",
        528: "EJUKEBOX",
        529: "EIOCBQUEUED",
        530: "ERECALLCONFLICT",
    }
)
ERRNO_VALUES: dict[str, int] = {v: k for k, v in ERRNO_NAMES.items()}
ERRNO_VALUES.update({"EWOULDBLOCK": 11, "EDEADLOCK": 35, "ENOTSUP": 95})

# Kernel-internal restart codes: strace prints them as "= ? NAME (message)".
_RESTART_MESSAGES: dict[int, str] = {
    512: "To be restarted if SA_RESTART is set",
    513: "To be restarted",
    514: "To be restarted if no handler",
    516: "Interrupted by signal",
}


def errno_name(err: int) -> str:
    """strace's name of a positive errno value; ERRNO_<n> for one it does not know."""
    return ERRNO_NAMES.get(err, f"ERRNO_{err}")


def errno_value(name: str) -> int:
    """The errno value of a name printed by strace (also ERRNO_<n>); ValueError if unknown."""
    if name in ERRNO_VALUES:
        return ERRNO_VALUES[name]
    if name.startswith("ERRNO_") and name[6:].isdigit():
        return int(name[6:])
    raise ValueError(f"unknown errno name: {name}")


def errno_message(err: int) -> str:
    """The text strace puts in parentheses after the errno name."""
    return _RESTART_MESSAGES.get(err) or os.strerror(err)


# --- signals ---------------------------------------------------------------------------------------

SIGRTMIN_KERNEL = 32


def signal_name(sig: int) -> str:
    """strace's name of a signal number (SIGRT_<n> for real-time signals)."""
    if sig >= SIGRTMIN_KERNEL:
        return f"SIGRT_{sig - SIGRTMIN_KERNEL}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def signal_value(name: str) -> int:
    """The number of a signal name as strace prints it; ValueError if unknown."""
    if name.startswith("SIGRT_") and name[6:].isdigit():
        return SIGRTMIN_KERNEL + int(name[6:])
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal name: {name}") from None


# --- flag printing ---------------------------------------------------------------------------------


def _flags(value: int, bits: tuple[tuple[int, str], ...], unknown: str | None, zero: str = "0") -> str:
    """strace's printflags: names in table order, leftover bits in hex, '0x.. /* X_??? */' if none."""
    value &= MASK64
    if value == 0:
        return zero
    names: list[str] = []
    rest = value
    for bit, name in bits:
        if rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        if not names and unknown is not None:
            return f"{rest:#x} /* {unknown} */"
        names.append(f"{rest:#x}")
    return "|".join(names)


def prot_str(value: int) -> str:
    """``PROT_READ|PROT_WRITE``; 0 is ``PROT_NONE``."""
    return _flags(value, PROT_BITS, "PROT_???", zero="PROT_NONE")


def mmap_flags_str(value: int) -> str:
    """``MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT``: type first, then bits, then size."""
    value &= MASK64
    kind = value & MAP_TYPE
    out = MAP_TYPES.get(kind, f"{kind:#x} /* MAP_??? */")
    huge_bits = MAP_HUGE_MASK << MAP_HUGE_SHIFT
    rest = value & ~MAP_TYPE & ~huge_bits
    if rest:
        out += "|" + _flags(rest, MAP_BITS, None)
    huge = (value & huge_bits) >> MAP_HUGE_SHIFT
    if huge:
        out += f"|{huge}<<MAP_HUGE_SHIFT"
    return out


def mremap_flags_str(value: int) -> str:
    return _flags(value, MREMAP_BITS, "MREMAP_???")


def advice_name(value: int) -> str:
    """``MADV_DONTNEED``; an unknown value as ``0x..``."""
    return ADVICE_NAMES.get(value, f"{value:#x}")


def advice_str(value: int) -> str:
    """The advice as strace prints it (unknown: ``0x63 /* MADV_??? */``)."""
    name = ADVICE_NAMES.get(value)
    return name if name is not None else f"{value:#x} /* MADV_??? */"


def advice_value(name: str) -> int:
    """``MADV_FREE``, ``free``, ``madv_free`` or a number (``8``, ``0x8``) -> 8; ValueError if unknown."""
    key = name.strip().upper()
    if not key.startswith("MADV_"):
        key = "MADV_" + key
    if key in MADVISE:
        return MADVISE[key]
    try:
        return int(name, 0)
    except ValueError:
        raise ValueError(f"unknown madvise advice: {name}") from None


def clone_flags_str(value: int) -> str:
    """``CLONE_VM|CLONE_THREAD|...``, with the exit signal byte (if any) as a signal name at the end."""
    value &= MASK64
    sig = value & CSIGNAL
    flags = value & ~CSIGNAL
    parts: list[str] = []
    if flags:
        parts.append(_flags(flags, CLONE_BITS, None))
    if sig:
        parts.append(signal_name(sig))
    return "|".join(parts) if parts else "0"


# --- one event as a strace line ---------------------------------------------------------------------


def comm_str(lo: int, hi: int) -> str:
    """The program name an EXEC record packs into two words (the kernel's comm), '' when not known."""
    raw = (int(lo) & (1 << 64) - 1).to_bytes(8, "little") + (int(hi) & (1 << 64) - 1).to_bytes(8, "little")
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def comm_words(name: str) -> tuple[int, int]:
    """The two words of a program name as the kernel keeps it (at most 15 bytes), for an EXEC record."""
    raw = name.encode("utf-8", "replace")[:15].ljust(16, b"\0")
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def addr_str(value: int) -> str:
    """strace's printaddr: NULL or hex."""
    value &= MASK64
    return "NULL" if value == 0 else f"{value:#x}"


def _int(value: int) -> int:
    """A C ``int`` stored as 64 bits: its low 32 bits, signed (strace prints an fd so)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _result(ret: int, hex_ok: bool) -> str:
    if -ERRNO_MAX <= ret < 0:
        err = -ret
        if err in _RESTART_MESSAGES:
            return f"? {errno_name(err)} ({errno_message(err)})"
        return f"-1 {errno_name(err)} ({errno_message(err)})"
    if hex_ok:
        return f"{ret & MASK64:#x}" if ret else "0"
    return str(ret)


def format_call(ev: np.void | np.ndarray) -> str:
    """One EVENT_DTYPE record rendered as ``strace`` prints it by default (no pid, time or column).

    Memory syscalls come out character for character as strace shows them; FORK, EXEC, EXIT and
    RSS, which do not keep every argument, get a strace-like summary line; malloc_trim and mallopt
    come out as ltrace shows them.
    """
    kind = int(ev["kind"])
    a = [int(ev[f"a{i}"]) for i in range(6)]
    ret = int(ev["ret"])
    if kind == Kind.BRK:
        return f"brk({addr_str(a[0])}) = {_result(ret, True)}"
    if kind == Kind.MMAP:
        fd = _int(a[4])
        off = f"{a[5]:#x}" if a[5] else "0"
        args = f"{addr_str(a[0])}, {a[1]}, {prot_str(a[2])}, {mmap_flags_str(a[3])}, {fd}, {off}"
        return f"mmap({args}) = {_result(ret, True)}"
    if kind == Kind.MUNMAP:
        return f"munmap({addr_str(a[0])}, {a[1]}) = {_result(ret, False)}"
    if kind == Kind.MREMAP:
        args = f"{addr_str(a[0])}, {a[1]}, {a[2]}, {mremap_flags_str(a[3])}"
        if a[3] & (MREMAP_MAYMOVE | MREMAP_FIXED) == MREMAP_MAYMOVE | MREMAP_FIXED:
            args += f", {addr_str(a[4])}"
        return f"mremap({args}) = {_result(ret, True)}"
    if kind == Kind.MADVISE:
        return f"madvise({addr_str(a[0])}, {a[1]}, {advice_str(a[2])}) = {_result(ret, False)}"
    if kind == Kind.MPROTECT:
        return f"mprotect({addr_str(a[0])}, {a[1]}, {prot_str(a[2])}) = {_result(ret, False)}"
    if kind == Kind.FORK:
        what = "thread" if a[2] else "process"
        return f"clone(flags={clone_flags_str(a[1])}) = {a[0]} /* new {what} */"
    if kind == Kind.EXEC:
        name = comm_str(a[1], a[2])
        return f"execve(...) = 0 /* by {a[0]}" + (f", now {name!r}" if name else "") + " */"
    if kind == Kind.EXIT:
        last = " /* last task */" if a[2] else ""
        if a[1]:
            return f"+++ exited with {a[0]} +++{last}"
        if a[3]:
            return f"+++ killed by {signal_name(a[3])} +++{last}"
        return f"+++ exited +++{last}"
    if kind == Kind.RSS:
        return f"--- rss anon={a[0]} file={a[1]} shmem={a[2]} swap={a[3]} ---"
    if kind == Kind.RESIDENT:
        return f"--- smaps {a[0]:#x}-{a[1]:#x} rss={a[2]} anon={a[3]} swap={a[4]} ---"
    if kind == Kind.PAGES:
        return f"--- pagemap {'read' if ev['aux'] == PAGES_EXTENT else 'in RAM'} {a[0]:#x}-{a[1]:#x} ---"
    if kind == Kind.MALLOC_TRIM:
        return f"malloc_trim({a[0]}) = {ret}"
    if kind == Kind.MALLOPT:
        param = _int(a[0])
        return f"mallopt({MALLOPT_PARAMS.get(param, str(param))}, {_int(a[1])}) = {ret}"
    return f"<kind {kind}>({', '.join(hex(x) for x in a)}) = {ret}"
