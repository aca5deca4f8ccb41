"""How much memory this process may still take before the kernel refuses it or kills it: the
least of what the machine has available (``MemAvailable`` and free swap, /proc/meminfo), what
its memory cgroup still allows (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), and what its
address-space limit (``RLIMIT_AS``) leaves. Reading commands compare it with what a trace will
need before they read it, so a trace too large gets a sentence instead of the OOM killer.
"""

from __future__ import annotations

import resource
from pathlib import Path

UNLIMITED = 1 << 62


def _meminfo(proc: Path) -> int:
    fields: dict[str, int] = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[name] = int(parts[0]) * 1024
    except OSError:
        return UNLIMITED
    if "MemAvailable" not in fields:
        return UNLIMITED
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(cgroup: Path) -> int:
    """The page cache a cgroup's usage counts that the kernel drops before it refuses memory."""
    try:
        for line in (cgroup / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name in ("inactive_file", "total_inactive_file") and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup(proc: Path, root: Path) -> int:
    """What the memory cgroup of this process (and every cgroup above it) still allows."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return UNLIMITED
    room = UNLIMITED
    for line in lines:
        hier, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hier == "0" and controllers == "":
            base, limit_name, usage_name = root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name = root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        here = base / path.lstrip("/")
        while True:  # the tightest of this cgroup and its parents
            limit, usage = _read_int(here / limit_name), _read_int(here / usage_name)
            if limit is not None and usage is not None and limit < UNLIMITED:
                room = min(room, max(0, limit - usage + _inactive_file(here)))
            if here == base:
                break
            here = here.parent
    return room


def _address_space(proc: Path) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except OSError:
        pass
    return soft


def available(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process can still allocate, as far as the machine, its cgroup and its limits say."""
    return min(_meminfo(proc), _cgroup(proc, cgroups), _address_space(proc))
