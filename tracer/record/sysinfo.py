"""Facts about the machine and the target's C library, for the trace header."""

from __future__ import annotations

import mmap
import os
import platform
import re

from tracer.record import procfs

_LIBC_NAME = re.compile(r"/(libc\.so\.6|libc-[\d.]+\.so|ld-musl-[\w.-]+\.so\.1|libc\.musl-[\w.-]+\.so\.1)$")
_GLIBC_VERSION = re.compile(rb"GNU C Library [^\n]*?release version (\d+\.\d+(?:\.\d+)?)")


def machine() -> dict:
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "page_size": mmap.PAGESIZE,
        "cpus": os.cpu_count(),
    }


def libc_version(path: str) -> str | None:
    """The version string a C library carries inside its file (glibc or musl)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    m = _GLIBC_VERSION.search(data)
    if m:
        return f"glibc {m.group(1).decode()}"
    if b"musl" in data:
        return "musl"
    return None


def target_libc(pid: int) -> str | None:
    """Path of the C library mapped into a running process (as seen from our mount namespace)."""
    try:
        maps = procfs.read_maps(pid)
    except procfs.ProcessGone:
        return None
    for m in maps:
        if _LIBC_NAME.search(m.path):
            root = f"/proc/{pid}/root"
            # read through the target's root so a container's libc is the one described
            return m.path if os.path.samefile(root, "/") else root + m.path
    return None


def host_libc() -> str | None:
    for d in ("/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/usr/lib", "/lib"):
        p = os.path.join(d, "libc.so.6")
        if os.path.exists(p):
            return os.path.realpath(p)
    return None


def describe_libc(path: str | None, source: str) -> dict:
    return {"path": path, "version": libc_version(path) if path else None, "source": source}
