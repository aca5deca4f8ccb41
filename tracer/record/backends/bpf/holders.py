"""Which processes hold uprobes on a file: the tracer named when the kernel refuses ours.

Every perf event a BPF tool opened on a uprobe is a file descriptor ``anon_inode:[perf_event]`` of
its process; the kernel tells what it probes through ``bpf(BPF_TASK_FD_QUERY)`` (the file, the
offset, uprobe or uretprobe), as ``bpftool perf`` shows it. Read-only, and only asked when a probe
was refused, so that the sentence can say *who* (``memleak-bpfcc, pid 4242``) instead of "another
tracer".
"""

from __future__ import annotations

import ctypes as ct
import os
from dataclasses import dataclass
from pathlib import Path

NR_BPF = 321  # x86-64
BPF_TASK_FD_QUERY = 20
BPF_FD_TYPE_UPROBE, BPF_FD_TYPE_URETPROBE = 4, 5
PERF_EVENT_LINK = "anon_inode:[perf_event]"
NAME_MAX = 4096


class _Query(ct.Structure):
    """``union bpf_attr``'s ``task_fd_query`` (linux/bpf.h)."""

    _fields_ = [("pid", ct.c_uint32), ("fd", ct.c_uint32), ("flags", ct.c_uint32), ("buf_len", ct.c_uint32),
                ("buf", ct.c_uint64), ("prog_id", ct.c_uint32), ("fd_type", ct.c_uint32),
                ("probe_offset", ct.c_uint64), ("probe_addr", ct.c_uint64)]


@dataclass(frozen=True)
class Holder:
    pid: int
    program: str  # its command line's first two words, as text
    offsets: frozenset[int]  # the file offsets it probes

    def shown(self) -> str:
        return f"{self.program} (pid {self.pid})"


def _libc() -> ct.CDLL:
    return ct.CDLL(None, use_errno=True)


def probed(pid: int, fd: int, libc: ct.CDLL) -> tuple[str, int] | None:
    """(file, offset) of the uprobe perf event ``fd`` of ``pid``, or None (not a uprobe, gone)."""
    buf = ct.create_string_buffer(NAME_MAX)
    q = _Query(pid=pid, fd=fd, buf_len=NAME_MAX, buf=ct.addressof(buf))
    if libc.syscall(NR_BPF, BPF_TASK_FD_QUERY, ct.byref(q), ct.sizeof(q)) != 0:
        return None
    if q.fd_type not in (BPF_FD_TYPE_UPROBE, BPF_FD_TYPE_URETPROBE):
        return None
    return buf.value.decode(errors="replace"), int(q.probe_offset)


def _program(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [os.path.basename(w.decode(errors="replace")) for w in argv[:2] if w]
    if len(words) == 2 and words[0].startswith("python"):  # bcc's tools are Python scripts
        words = words[1:]
    return " ".join(words[:1]) or "?"


def holders(path: str, skip: int | None = None) -> list[Holder]:
    """The processes (other than ``skip``) holding uprobes on the file ``path`` (or its real path)."""
    want = {path, os.path.realpath(path)}
    libc = _libc()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == skip:
            continue
        pid, offsets = int(entry.name), set()
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) != PERF_EVENT_LINK:
                    continue
            except OSError:
                continue
            got = probed(pid, int(fd.name), libc)
            if got and (got[0] in want or os.path.realpath(got[0]) in want):
                offsets.add(got[1])
        if offsets:
            out.append(Holder(pid, _program(pid), frozenset(offsets)))
    return out
