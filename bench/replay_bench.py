"""Time and peak memory of reading commands on synthetic traces of 1M, 10M and 40M events.

    .venv/bin/python bench/replay_bench.py [--sizes 1000000,10000000,40000000] [--keep DIR] [--runs 1]

The traces are bench/report_bench.py's (mostly malloc/free as a glibc program makes them, the break,
mmapped blocks, a thread arena, madvise, malloc_trim, RSS samples). Each command runs as its own
process (``heapline summary TRACE`` and ``heapline report TRACE -o OUT``, as a user runs them);
printed per size: wall seconds and peak RSS (the kernel's ru_maxrss of that process), and the bytes
per event that peak means over the floor (the same command on a small trace: the interpreter and
its libraries), the trace's columns included (tracer/commands/base.py's estimates, the 88-byte
columns of a trace whose arguments are all set plus what the command keeps beside them, must
cover it). Goals (the speed issue): summary of 10M events under 5 s and 1.5 GB, of 40M under
20 s and 3 GB; report of the same order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


SMALL = ROOT / "traces" / "phases.trace"  # a few thousand events: what a command takes before any trace

def measure(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one heapline command run as its own process."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tracer.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"heapline {' '.join(args)} failed: {err.strip()[-400:]}")
    return wall, usage.ru_maxrss * 1024


def synthesized(path: Path, n: int) -> int:
    """The trace of about ``n`` events at ``path`` (made by a process of its own: a peak RSS outlives
    fork and exec, so the measured commands must not be forked from one that held a trace)."""
    code = (f"from tracer.tracefile import open_trace; print(len(open_trace({str(path)!r})))" if path.exists() else
            f"from report_bench import synthesize; print(synthesize({str(path)!r}, {n}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "bench", env=env, check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000,40000000")
    ap.add_argument("--keep", help="write the traces and reports here instead of a temporary folder")
    ap.add_argument("--runs", type=int, default=1, help="runs of each command (the median and spread are shown)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        base = {verb: measure([verb, str(SMALL), *extra])[1] for verb, extra in
                (("summary", []), ("report", ["-o", str(where / "small.html")]))}
        print(f"peak RSS on a small trace (the floor): summary {base['summary'] / 1e9:.2f} GB, "
              f"report {base['report'] / 1e9:.2f} GB")
        print(f"{'events':>12} {'command':>8} {'wall s':>14} {'peak RSS GB':>14} {'B/event':>8}")
        for n in (int(s) for s in args.sizes.split(",")):
            trace = where / f"synthetic-{n}.trace"
            count = synthesized(trace, n)
            for verb, extra in (("summary", []), ("report", ["-o", str(where / f"synthetic-{n}.html")])):
                runs = [measure([verb, str(trace), *extra]) for _ in range(args.runs)]
                walls, peaks = [r[0] for r in runs], [r[1] for r in runs]
                wall, peak = statistics.median(walls), statistics.median(peaks)
                per = (peak - base[verb]) / count
                spread = f" ({min(walls):.1f}-{max(walls):.1f})" if len(runs) > 1 else ""
                print(f"{count:>12,} {verb:>8} {wall:>7.1f}{spread:>7} {peak / 1e9:>14.2f} {per:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
