"""Uprobe definitions left in tracefs by heapline recorders that were killed.

The allocator probes are defined in ``uprobe_events`` as ``heapline/<function>_<recorder pid>_<n>``
(tracer/record/backends/bpf/uprobes.py), and where bcc cannot create a uprobe through the perf ``uprobe`` PMU
it writes a definition named ``..._bcc_<tracer pid>``; a recorder killed with SIGKILL removes
neither. Each bpf recording registers its pid in ``/run/heapline/``; the next one removes the
definitions of registered recorders that are gone, and only those: other tools' probes are never
touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REGISTRY = Path("/run/heapline")
UPROBE_EVENTS = Path("/sys/kernel/tracing/uprobe_events")
_NAMES = (
    re.compile(r"^[pr]:(?P<group>[^/\s]+)/(?P<name>\S+_bcc_(?P<pid>\d+))\s"),
    re.compile(r"^[pr]:(?P<group>heapline)/(?P<name>\w+?_(?P<pid>\d+)_\d+)\s"),
)


def _is_heapline(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(b"heapline" in a or a == b"tracer.cli" for a in argv)


def register(pid: int | None = None) -> None:
    pid = pid or os.getpid()
    try:
        REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
        (REGISTRY / str(pid)).touch()
    except OSError:
        pass  # not root: bcc's fallback definitions could not be written either


def unregister(pid: int | None = None) -> None:
    try:
        (REGISTRY / str(pid or os.getpid())).unlink()
    except OSError:
        pass


def dead_recorders() -> set[int]:
    try:
        entries = [int(p.name) for p in REGISTRY.iterdir() if p.name.isdigit()]
    except OSError:
        return set()
    return {pid for pid in entries if pid != os.getpid() and not _is_heapline(pid)}


def write_event(events_file: Path, line: str) -> None:
    """Append one definition or removal (never O_TRUNC: that would drop every uprobe on the machine;
    and os.open, not open(..., "a"), which seeks to the end: uprobe_events answers a seek with EINVAL)."""
    fd = os.open(events_file, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def clean(events_file: Path = UPROBE_EVENTS) -> list[str]:
    """Remove the uprobe definitions of dead heapline recorders; return the names removed."""
    dead = dead_recorders()
    if not dead:
        return []
    removed: list[str] = []
    try:
        lines = events_file.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        m = next((m for m in (r.match(line + " ") for r in _NAMES) if m), None)
        if not m or int(m["pid"]) not in dead:
            continue
        try:
            write_event(events_file, f"-:{m['group']}/{m['name']}")
            removed.append(m["name"])
        except OSError:
            continue  # still in use by someone: leave it
    for pid in dead:
        unregister(pid)
    return removed
