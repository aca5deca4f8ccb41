"""Start-up and tear-down of a recording: `heapline record -- /bin/true` under each loader, beside
bpftrace on the same tracepoints and strace -f, and the time from nothing to probes armed on a
running process (attach).

    sudo .venv/bin/python bench/startup.py [--repeat 7]

Wall time and the recorder's peak RSS (its own, from wait4) of each command; the median of
--repeat runs. Attach: in one process, importing the backend, loading the probes and arming them
on a sleeping process (allocator probes included), then stopping.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAPLINE = [sys.executable, "-m", "tracer.cli"]
TRACEPOINTS = ",".join(
    [f"tracepoint:syscalls:sys_{d}_{s}" for s in ("brk", "mmap", "munmap", "mremap", "madvise", "mprotect",
                                                  "clone", "clone3", "fork", "vfork") for d in ("enter", "exit")]
    + ["tracepoint:syscalls:sys_enter_exit_group", "tracepoint:sched:sched_process_fork",
       "tracepoint:sched:sched_process_exec", "tracepoint:sched:sched_process_exit", "tracepoint:kmem:rss_stat"])
ATTACH = """
import sys, time
t0 = time.monotonic()
from tracer.record.backends.base import Options
from tracer.record.backends.bpf.backend import BpfBackend
b = BpfBackend(Options())
b.attach(int(sys.argv[1]))
t1 = time.monotonic()
b.stop()
print(t1 - t0, time.monotonic() - t1, b.info().details["loader"])
"""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and the command's own peak RSS in MiB."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def row(name: str, runs: list[tuple[float, float]]) -> None:
    wall = statistics.median(w for w, _ in runs)
    rss = statistics.median(r for _, r in runs)
    print(f"{name:<44} {wall:6.2f} s  {rss:7.1f} MiB  (median of {len(runs)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (recording needs it)")
    out = tempfile.mkdtemp(prefix="heapline-startup-")
    trace = os.path.join(out, "t.trace")
    print(f"{'command':<44} {'wall':>8}  {'peak RSS':>11}")
    for loader in ("core", "bcc"):
        env = {**os.environ, "HEAPLINE_LOADER": loader}
        for extra, label in (([], ""), (["--no-alloc"], " --no-alloc")):
            cmd = [*HEAPLINE, "record", "-q", *extra, "-o", trace, "--", "/bin/true"]
            timed(cmd, env)  # warm the page cache (and, for bcc, its header cache)
            row(f"heapline record{label} ({loader})", [timed(cmd, env) for _ in range(args.repeat)])
    bpftrace = shutil.which("bpftrace")
    if bpftrace:
        cmd = [bpftrace, "-e", TRACEPOINTS + " { @[probe] = count(); }", "-c", "/bin/true"]
        timed(cmd)
        row("bpftrace -e (the same tracepoints) -c", [timed(cmd) for _ in range(args.repeat)])
    strace = shutil.which("strace")
    if strace:
        cmd = [strace, "-f", "-o", os.devnull, "/bin/true"]
        row("strace -f /bin/true", [timed(cmd) for _ in range(args.repeat)])
    for loader in ("core", "bcc"):
        armed, stopped = [], []
        for _ in range(args.repeat):
            target = subprocess.Popen(["sleep", "30"])
            try:
                r = subprocess.run([sys.executable, "-c", ATTACH, str(target.pid)], capture_output=True, text=True,
                                   cwd=ROOT, env={**os.environ, "HEAPLINE_LOADER": loader}, check=True)  # fmt: skip
            finally:
                target.kill()
                target.wait()
            a, s, _ = r.stdout.split()
            armed.append(float(a))
            stopped.append(float(s))
        print(f"attach to armed ({loader}): {statistics.median(armed):.2f} s, stop {statistics.median(stopped):.2f} s"
              f"  (median of {args.repeat})")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
