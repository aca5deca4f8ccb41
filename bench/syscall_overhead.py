"""Slowdown of a syscall-heavy workload under each heapline backend and under strace, in one run.

    sudo .venv/bin/python bench/syscall_overhead.py [--iterations 200000] [--repeat 3]

The workload (workloads/bin/mmap_churn) times its own loop of mmap / touch / munmap with
CLOCK_MONOTONIC and prints it, so the figures compare the traced work itself, not the tracer's
start-up (compiling probes) or shutdown; those are shown separately as wall time.
Each configuration runs --repeat times; the median loop time is reported.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHURN = ROOT / "workloads" / "bin" / "mmap_churn"
HEAPLINE = [sys.executable, "-m", "tracer.cli"]


def run(cmd: list[str]) -> tuple[int, float, str]:
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    m = re.search(r"HL loop ns=(\d+)", p.stdout)
    if not m:
        raise SystemExit(f"no loop time from: {' '.join(cmd)}")
    return int(m.group(1)), wall, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bpf backend needs it")
    subprocess.run(["make", "-s", "-C", str(ROOT / "workloads")], check=True)
    n = str(args.iterations)
    tmp = tempfile.mkdtemp(prefix="heapline-bench-")
    trace = os.path.join(tmp, "b.trace")
    configs: dict[str, list[str]] = {
        "untraced": [str(CHURN), n],
        "heapline bpf": [*HEAPLINE, "record", "-q", "--backend", "bpf", "-o", trace, "--", str(CHURN), n],
        "heapline strace": [*HEAPLINE, "record", "-q", "--backend", "strace", "-o", trace, "--", str(CHURN), n],
    }
    if shutil.which("strace"):
        peer = ["strace", "-f", "-qq", "-e", "trace=brk,mmap,munmap,mremap,madvise,mprotect", "-o", "/dev/null"]
        configs["strace (peer)"] = [*peer, str(CHURN), n]
        configs["strace --seccomp-bpf"] = [*peer, "--seccomp-bpf", str(CHURN), n]
    results: dict[str, tuple[float, float]] = {}
    for name, cmd in configs.items():
        loops, walls = [], []
        for _ in range(args.repeat):
            loop_ns, wall, _ = run(cmd)
            loops.append(loop_ns)
            walls.append(wall)
        results[name] = (statistics.median(loops), statistics.median(walls))
        print(f"  measured {name}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

    base = results["untraced"][0]
    calls = 2 * args.iterations
    print(f"mmap_churn: {args.iterations:,} x (mmap 4 KiB, touch, munmap) = {calls:,} traced syscalls; "
          f"median of {args.repeat}")
    print(f"{'configuration':<22} {'loop':>9} {'slowdown':>9} {'added/syscall':>14} {'wall':>8}")
    for name, (loop, wall) in results.items():
        added = (loop - base) / calls
        print(f"{name:<22} {loop / 1e9:8.3f}s {loop / base:8.2f}x {added:11.0f} ns {wall:7.2f}s")


if __name__ == "__main__":
    main()
