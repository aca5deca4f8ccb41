"""The floor: uprobes on malloc (entry and return) and free (entry) that only count, no records.

    sudo .venv/bin/python bench/bare_uprobes.py workloads/bin/malloc_churn 2000000

Same probe sites as heapline (tracer/record/backends/bpf/probesites.py), same per-pid attachment. Prints the
workload's own output (its loop time) and the counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer.record.backends.bpf import allocators, kheaders  # noqa: E402
from tracer.record.backends.bpf.probesites import choose_sites  # noqa: E402

PROGRAM = r"""
#include <uapi/linux/ptrace.h>
BPF_ARRAY(counts, u64, 3);
static __always_inline int bump(int i) {
    u64 *c = counts.lookup(&i);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 0;
}
int malloc_enter(struct pt_regs *ctx) { return bump(0); }
int malloc_return(struct pt_regs *ctx) { return bump(1); }
int free_enter(struct pt_regs *ctx) { return bump(2); }
"""


def main() -> None:
    churn, pairs = sys.argv[1], sys.argv[2]
    os.environ.setdefault("BCC_KERNEL_SOURCE", kheaders.find().path)
    from bcc import BPF

    prog = subprocess.Popen([churn, "--wait", pairs], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = prog.stdout.readline() + prog.stdout.readline()
    lib = allocators.find_for_pid(prog.pid)
    sites = choose_sites(lib.path, {"malloc": ("rdi",), "free": ("rdi",)})
    b = BPF(text=PROGRAM)
    m, f = sites["malloc"], sites["free"]
    b.attach_uprobe(name=lib.path, sym=m.symbol, sym_off=m.offset, fn_name="malloc_enter", pid=prog.pid)
    b.attach_uretprobe(name=lib.path, sym=m.symbol, fn_name="malloc_return", pid=prog.pid)
    b.attach_uprobe(name=lib.path, sym=f.symbol, sym_off=f.offset, fn_name="free_enter", pid=prog.pid)
    prog.stdin.write("g")
    prog.stdin.flush()
    out += prog.stdout.read()
    prog.wait()
    counts = [v.value for v in b["counts"].values()]
    sys.stdout.write(out)
    print(f"bare counts malloc_enter={counts[0]} malloc_return={counts[1]} free_enter={counts[2]}")


if __name__ == "__main__":
    main()
