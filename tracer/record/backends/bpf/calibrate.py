"""What tracing one allocator call costs on this machine, measured, so a summary can say what the
recording added to the target's run time.

A small Python program calls ``malloc`` and ``free`` of the same allocator library through ctypes,
timing its own loop; it runs once untraced and once with heapline's own probes attached to it, in
the same BPF object the recording uses. The difference per call is cached per kernel and library
build, so it is measured once per machine and allocator.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracer.record.backends.bpf.allocators import AllocatorLib

PAIRS = 20000
_LOOP = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
m, f, n = libc.malloc, libc.free, int(sys.argv[1])
for _ in range(1000):
    f(m(64))
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read(1)
t = time.perf_counter_ns()
for _ in range(n):
    f(m(64))
sys.stdout.write(f"{time.perf_counter_ns() - t}\n")
"""


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "heapline" / "calibration.json"


# bump when the allocator probes change what a call costs
# (2: records batched per CPU; 3: one program per group of sites, found by address)
PROBES_VERSION = 4


def _key(lib: AllocatorLib) -> str:
    return f"{platform.release()}|{lib.family}|{lib.build_id or lib.shown_path}|probes{PROBES_VERSION}"


def _run(lib: AllocatorLib, attach: Callable[[int], Any] | None) -> tuple[int, int]:
    """(loop ns, pid) of one calibration run; ``attach(pid)`` arms probes on it before the loop."""
    env = dict(os.environ)
    if lib.family != "glibc":
        env["LD_PRELOAD"] = lib.path
    p = subprocess.Popen([sys.executable, "-c", _LOOP, str(PAIRS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    try:
        assert p.stdout is not None and p.stdin is not None
        p.stdout.readline()
        if attach is not None:
            attach(p.pid)
        p.stdin.write("g")
        p.stdin.flush()
        ns = int(p.stdout.readline())
        p.wait(timeout=60)
        return ns, p.pid
    finally:
        if p.poll() is None:
            p.kill()


def per_call_ns(
    lib: AllocatorLib, attach: Callable[[int], Any], detach: Callable[[], None], say: Callable[[str], None]
) -> dict[str, Any]:
    """The added cost of one traced allocator call (the mean of a malloc and a free), cached."""
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    key = _key(lib)
    if key in known:
        return {**known[key], "cached": True}
    say(f"measuring what tracing {lib.family}'s allocator calls costs on this machine (once; a few seconds)")
    base = min(_run(lib, None)[0] for _ in range(2))
    traced, pid = _run(lib, attach)
    detach()
    result = {
        "per_call_ns": round(max(traced - base, 0) / (2 * PAIRS), 1),
        "pairs": PAIRS,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "calibration_pid": pid,
    }
    known[key] = {k: v for k, v in result.items() if k != "calibration_pid"}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    except OSError:
        pass
    return {**result, "cached": False}
