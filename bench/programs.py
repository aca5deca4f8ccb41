"""What recording costs on real programs: wall time untraced, under heapline with each allocator path.

    sudo .venv/bin/python bench/programs.py [--repeat 3] [--only gcc]

Each program does real work of its own (nothing here is a synthetic loop):
  gcc      compiles a generated 2000-line C file with -O2 (cc1 and as are children: -f follows them)
  python3  the system interpreter builds and drops dicts, lists and strings (pymalloc and the heap)
  python3+jemalloc  the same under LD_PRELOAD=libjemalloc.so.2
  sqlite3  inserts 200,000 rows into an in-memory table, indexes and queries it
Each is run untraced, then recorded by heapline with --no-alloc (syscalls only), with the default
allocator path (uprobes) and with --alloc preload. Printed: the median wall time of --repeat runs,
its spread, the ratio to the untraced run, and the calls the recording lost.
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
sys.path.insert(0, str(ROOT))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
PY_WORK = """
import sys
keep = []
for round in range(6):
    d = {i: str(i) * (i % 7 + 1) for i in range(120_000)}
    l = [bytes(i % 300) for i in range(60_000)]
    keep.append(list(d.values())[::50])
    del d, l
print(sum(len(k) for k in keep))
"""
SQL_WORK = """
create table t(a integer primary key, b text, c real);
with recursive n(i) as (select 1 union all select i + 1 from n where i < 200000)
insert into t select i, hex(randomblob(24)), i * 0.5 from n;
create index tb on t(b);
select count(*), sum(length(b)) from t where b > '8';
"""
MODES = (("untraced", None), ("--no-alloc", ["--no-alloc"]), ("uprobes", ["--alloc", "uprobes"]),
         ("preload", ["--alloc", "preload"]))


def c_source(lines: int) -> str:
    """A C file of about ``lines`` lines: many small functions the optimizer has to work through."""
    out = ["#include <stdio.h>", "#include <string.h>"]
    for i in range(lines // 10):
        out += [f"static int f{i}(int x, const char *s) {{", f"    int a[{i % 13 + 3}];",
                f"    for (int j = 0; j < {i % 13 + 3}; j++) a[j] = x * j + (int)strlen(s) + {i};",
                "    int r = 0;", f"    for (int j = 0; j < {i % 13 + 3}; j++) r ^= a[j] << (j % 5);",
                f"    if (r % {i % 7 + 2} == 0) r += f{max(i - 1, 0)}(x - 1, s);" if i else "    r += 1;",
                "    return r;", "}", ""]
    calls = " + ".join(f"f{i}(argc, argv[0])" for i in range(0, lines // 10, 7))
    out += ["int main(int argc, char **argv) {", f"    printf(\"%d\\n\", {calls});", "    return 0;", "}"]
    return "\n".join(out) + "\n"


def programs(tmp: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    src = os.path.join(tmp, "big.c")
    Path(src).write_text(c_source(2000))
    sql = os.path.join(tmp, "work.sql")
    Path(sql).write_text(SQL_WORK)
    py = os.path.join(tmp, "work.py")
    Path(py).write_text(PY_WORK)
    out: dict[str, tuple[list[str], dict[str, str]]] = {
        "gcc": (["gcc", "-O2", "-c", src, "-o", os.path.join(tmp, "big.o")], {}),
        "python3": (["/usr/bin/python3", py], {}),
    }
    if os.path.exists(JEMALLOC):
        out["python3+jemalloc"] = (["/usr/bin/python3", py], {"LD_PRELOAD": JEMALLOC})
    if shutil.which("sqlite3"):
        out["sqlite3"] = (["sqlite3", ":memory:", f".read {sql}"], {})
    return out


def one(cmd: list[str], env: dict[str, str], options: list[str] | None, trace: str) -> tuple[float, int] | str:
    """Wall seconds of one run (recorded when ``options`` is given) and the calls its recording lost,
    or heapline's sentence when it refuses the combination (an allocator that preload cannot interpose)."""
    if options is None:
        full, run_env = cmd, {**os.environ, **env}
    else:  # the target's variables go to the target alone, not to the recorder (LD_PRELOAD)
        full = [*HEAPLINE, "record", "-q", *options, *(f"-E{k}={v}" for k, v in env.items()), "-o", trace, "--", *cmd]
        run_env = dict(os.environ)
    t = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, cwd=ROOT, env=run_env)
    wall = time.perf_counter() - t
    if p.returncode != 0 and options is not None and p.stderr.startswith("heapline: "):
        return p.stderr.strip().splitlines()[-1]
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(full)}\n{p.stderr[-2000:]}")
    if options is None:
        return wall, 0
    from tracer.tracefile import open_trace

    return wall, int(open_trace(trace).end["lost_total"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", help="measure only the programs whose name contains this")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "run.trace")
        print(f"{'program':18} {'mode':11} {'wall (median)':>14} {'spread':>15} {'x untraced':>10} {'lost':>8}")
        for name, (cmd, env) in programs(tmp).items():
            if a.only and not any(o in name for o in a.only):
                continue
            base = None
            for mode, options in MODES:
                walls, lost, refused = [], 0, ""
                for _ in range(a.repeat):
                    got = one(cmd, env, options, trace)
                    if isinstance(got, str):
                        refused = got
                        break
                    walls.append(got[0])
                    lost = max(lost, got[1])
                if refused:
                    print(f"{name:18} {mode:11} not measured: {refused}", flush=True)
                    continue
                med = statistics.median(walls)
                base = base or med
                print(f"{name:18} {mode:11} {med:13.2f}s {min(walls):6.2f}-{max(walls):6.2f} s {med / base:9.1f}x "
                      f"{lost if options else '-':>8}", flush=True)


if __name__ == "__main__":
    main()
