"""What tracing malloc/free costs, under heapline and its peers, measured in one run.

    sudo .venv/bin/python bench/alloc_overhead.py [--pairs 2000000] [--repeat 5]

The workload (workloads/bin/malloc_churn) times its own loop of malloc(64) + touch + free with
CLOCK_MONOTONIC, so every figure is the traced work itself, without any tool's start-up. Slow
tools run fewer pairs (the cost is reported per pair). Printed, for each tool: the loop time per
pair, the cost it added per pair, and the ratio against an untraced run and against bcc's memleak.
heapline is measured with each allocator path: uprobes (the default) and --alloc preload (the
in-process library; with --alloc-block a full ring makes the program wait instead of losing calls).
Then heapline's own figures on a 10-million-call run (both paths) and on a Python program (bench/py_alloc.py,
varied sizes and pointers): lost events, the recorder's CPU per event (and how much of it went
to Arrow: conversion, lz4 and the write), and bytes on disk per event.
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
CHURN = str(ROOT / "workloads" / "bin" / "malloc_churn")
HEAPLINE = [sys.executable, "-m", "tracer.cli"]
sys.path.insert(0, str(ROOT))


def loop_ns(text: str) -> int:
    m = re.search(r"HL loop ns=(\d+)", text)
    if not m:
        raise SystemExit(f"no loop time in output:\n{text[-2000:]}")
    return int(m.group(1))


def run_plain(cmd: list[str], env: dict | None = None) -> int:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return loop_ns(p.stdout)


LOST: dict[str, list[int]] = {}  # heapline's rows: calls lost in each run


def run_heapline(row: str, options: list[str], trace: str, pairs: int) -> int:
    """One heapline recording of the churn; its loop time (and the calls it lost, kept in LOST)."""
    ns = run_plain([*HEAPLINE, "record", "-q", *options, "-o", trace, "--", CHURN, str(pairs)])
    from tracer.tracefile import open_trace

    LOST.setdefault(row, []).append(int(open_trace(trace).end["lost_total"]))
    return ns


def run_attached(tool: list[str], ready: str, pairs: int) -> int:
    """Start the churn held (--wait), attach ``tool`` (which gets the pid appended), let it go."""
    prog = subprocess.Popen([CHURN, "--wait", str(pairs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = prog.stdout.readline()  # HL pid
    out += prog.stdout.readline()  # HL ready
    from tracer.record.backends.bpf import kheaders

    env = {**os.environ, "BCC_KERNEL_SOURCE": kheaders.find().path}  # bcc tools need the same headers
    t = subprocess.Popen([*tool, str(prog.pid)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=ROOT, env=env)
    seen = ""
    deadline = time.monotonic() + 120
    while ready not in seen and time.monotonic() < deadline:
        line = t.stdout.readline()
        if not line:
            break
        seen += line
    if ready not in seen:
        raise SystemExit(f"{tool[0]} did not attach:\n{seen[-2000:]}")
    time.sleep(0.5)
    prog.stdin.write("g")
    prog.stdin.flush()
    out += prog.stdout.read()
    prog.wait()
    t.send_signal(2)
    try:
        t.wait(timeout=60)
    except subprocess.TimeoutExpired:
        t.kill()
    return loop_ns(out)


def bare_uprobes_cmd(pairs: int) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "bare_uprobes.py"), CHURN, str(pairs)]


def collector_figures(title: str, cmd: list[str], trace: str, options: list[str] | None = None) -> None:
    """Record ``cmd`` (with heapline's ``options``) and print what the recorder spent and wrote per event."""
    p = subprocess.run([*HEAPLINE, "record", "-q", *(options or []), "-o", trace, "--", *cmd], capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    from tracer.tracefile import open_trace

    t = open_trace(trace)
    events = len(t)
    cpu, arrow = t.end["collector_cpu_s"], t.end["writer_cpu_s"]
    size = os.path.getsize(trace)
    print(f"\n{title}: {events:,} events recorded, {t.end['lost_total']} lost "
          f"({t.end['backend_end'].get('lost_by_reason')})")
    print(f"collector CPU: {cpu / events * 1e9:.0f} ns per event ({cpu:.2f} s draining, converting and writing), "
          f"of which {arrow / events * 1e9:.0f} ns converting to Arrow, compressing and writing")
    print(f"on disk: {size / events:.1f} bytes per event ({size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big", type=int, default=5_000_000, help="pairs of the lossless run (2 calls each)")
    ap.add_argument("--only", action="append", help="measure only the tools whose name contains this (repeatable)")
    ap.add_argument("--no-collector", action="store_true", help="skip the recorder's own figures")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: uprobes need it")
    subprocess.run(["make", "-s", "-C", str(ROOT / "workloads")], check=True)
    tmp = tempfile.mkdtemp(prefix="heapline-bench-")
    trace = os.path.join(tmp, "a.trace")
    n = args.pairs
    small = max(args.pairs // 100, 10_000)

    tools: dict[str, tuple[int, object]] = {
        "untraced": (n, lambda: run_plain([CHURN, str(n)])),
        "heapline": (n, lambda: run_heapline("heapline", [], trace, n)),
        "heapline --alloc preload": (n, lambda: run_heapline("heapline --alloc preload", ["--alloc", "preload"],
                                                             trace, n)),
        "heapline preload, 256 MiB ring": (n, lambda: run_heapline(
            "heapline preload, 256 MiB ring", ["--alloc", "preload", "--ring-mb", "256"], trace, n)),
        "heapline preload --alloc-block": (n, lambda: run_heapline("heapline preload --alloc-block",
                                                                   ["--alloc", "preload", "--alloc-block"], trace, n)),
        "bare uprobes (count only)": (n, lambda: run_plain(bare_uprobes_cmd(n))),
    }
    memleak = shutil.which("memleak-bpfcc")
    if memleak:
        tools["bcc memleak"] = (small * 10, lambda: run_attached([memleak, "-p"], "Attaching to pid", small * 10))
    if shutil.which("heaptrack"):
        out = os.path.join(tmp, "ht")
        tools["heaptrack"] = (n, lambda: run_plain(["heaptrack", "-o", out, CHURN, str(n)]))
    if shutil.which("ltrace"):
        tools["ltrace -e malloc+free"] = (
            small, lambda: run_plain(["ltrace", "-e", "malloc+free", "-o", "/dev/null", CHURN, str(small)])
        )
    if args.only:
        tools = {k: v for k, v in tools.items() if k == "untraced" or any(o in k for o in args.only)}
    # rounds: every tool once per round, so a slow spell of the machine weighs on all of them alike
    samples: dict[str, list[float]] = {name: [] for name in tools}
    for r in range(args.repeat):
        for name, (pairs, fn) in tools.items():
            samples[name].append(fn() / pairs)  # type: ignore[operator]
        print(f"  round {r + 1} of {args.repeat} measured", file=sys.stderr)
    per_pair = {name: statistics.median(v) for name, v in samples.items()}

    base = per_pair["untraced"]
    ml = per_pair.get("bcc memleak")
    print(f"malloc(64) + touch + free; median of {args.repeat} rounds; untraced {base:.1f} ns per pair")
    print(f"{'tool':<32} {'ns/pair':>10} {'added/pair':>12} {'x untraced':>11} {'x memleak cost':>15}  lost")
    for name, v in per_pair.items():
        added = v - base
        vs_ml = "-"
        if ml and name != "bcc memleak" and added > 0:
            r = (ml - base) / added
            vs_ml = f"{r:.1f}x cheaper" if r >= 1 else f"{1 / r:.0f}x dearer"
        lost = f"  {max(LOST[name]):,} of {2 * tools[name][0]:,} calls (worst run)" if name in LOST else ""
        print(f"{name:<32} {v:10.1f} {added / 1000:9.2f} µs {v / base:10.1f}x {vs_ml:>15}{lost}")

    if args.no_collector:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # the lossless run: 10M calls, recorder CPU per event, bytes per event
    big = args.big
    collector_figures(f"{2 * big:,} allocator calls (the churn)", [CHURN, str(big)], trace)
    collector_figures(f"{2 * big:,} allocator calls (the churn), --alloc preload --alloc-block", [CHURN, str(big)],
                      trace, ["--alloc", "preload", "--alloc-block"])
    # a real program: varied sizes and pointers, syscalls and RSS records between the calls
    py = ["env", "PYTHONMALLOC=malloc", sys.executable, str(ROOT / "bench" / "py_alloc.py")]
    collector_figures("a Python program with PYTHONMALLOC=malloc (bench/py_alloc.py)", py, trace)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
