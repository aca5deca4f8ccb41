"""--alloc preload against --alloc uprobes: on every workload, the same allocator calls and the same
live bytes at the end.

Each workload is recorded twice with address randomization off, once through each path. The
preloaded run has two more environment variables (LD_PRELOAD and the ring's path); the uprobe run
is given two of the same lengths, so that a program that copies its environment (Python) makes the
same calls in both. Pointers are compared modulo where the blocks landed (the preloaded library's
mappings move mmap addresses): each pointer is named by the order in which its process first saw
it. Compared, per process (in the order the processes appeared): the count of each kind of call,
the multiset of calls with their sizes, each thread's sequence of calls with their pointers'
names where the process has one thread, and the live bytes and blocks at the end.

What only the uprobe path sees, and is left out of its side: the calls glibc makes to its own
free() from inside libc (the tcache and arena teardown at thread exit), which no interposer can
see; they free blocks no traced call returned (unmatched frees), so live bytes do not depend on
them.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

import numpy as np
import pytest
from helpers import ROOT, needs_root, run_heapline, workload

from tracer.events import Kind
from tracer.record.backends.bpf import preload
from tracer.tracefile import open_trace

pytestmark = needs_root
SCENARIOS = ROOT / "workloads" / "scenarios" / "bin"
LIBRARY = preload.library_path(ROOT / "probes")
PY_SCRIPT = "import random\nr = random.Random(1)\nkeep = [{str(j): [j] * r.randint(1, 40) for j in range(8)} " \
            "for _ in range(3000)]\ndel keep[::2]\nprint(len(keep))\n"

WORKLOADS = {
    "alloc_calls": [workload("alloc_calls")],
    "accounting": [workload("accounting")],
    "phases": [workload("phases")],
    **{f"scenario-{name}": [str(SCENARIOS / name), *args] for name, args in (
        ("tiny-mallocs", ["20000"]), ("free-and-sbrk", ["1000", "10240"]), ("mmap-threshold", []),
        ("trim-threshold", ["default"]), ("threads", []), ("realloc-grow", []), ("fork-exit", []),
        ("reuse", ["20000"]), ("allocators", []))},
    "python3": [sys.executable, "-c", PY_SCRIPT],
    # every object through malloc, and an exec on the way (env execs python3, keeping the environment)
    "python3-malloc": ["env", "PYTHONMALLOC=malloc", sys.executable, "-c", PY_SCRIPT],
}  # fmt: skip

# the size arguments of each kind (pointers are compared by name, below)
SIZES = {Kind.MALLOC: ("a0",), Kind.CALLOC: ("a0", "a1"), Kind.REALLOC: ("a1",), Kind.REALLOCARRAY: ("a1", "a2"),
         Kind.POSIX_MEMALIGN: ("a1", "a2"), Kind.ALIGNED_ALLOC: ("a0", "a1"), Kind.MEMALIGN: ("a0", "a1"),
         Kind.VALLOC: ("a0",), Kind.PVALLOC: ("a0",), Kind.MALLOC_TRIM: ("a0",), Kind.MALLOPT: ("a0", "a1"),
         Kind.NEW: ("a0", "a1"), Kind.FREE: (), Kind.DELETE: ("a1",)}
POINTER_IN = {Kind.FREE: "a0", Kind.DELETE: "a0", Kind.REALLOC: "a0", Kind.REALLOCARRAY: "a0"}
OUT_IN_A3 = {Kind.POSIX_MEMALIGN}


def record(tmp_path, name: str, method: str, cmd: list[str]) -> str:  # noqa: ANN001
    trace = str(tmp_path / f"{name}-{method}.trace")
    # in the order the preload path adds them
    same_length = ["-E", f"LD_PRELOAX={LIBRARY}",
                   "-E", "HEAPLINE_PRELOAD_RINX=/dev/shm/heapline-preload-0000000-00"] if method == "uprobes" else []
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = run_heapline("record", "-q", "--no-aslr", "--alloc", method, *same_length, "-o", trace, "--", *cmd,
                        env=env, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    return trace


def calls(trace: str) -> list[list[tuple]]:
    """Per process, in the order they appeared: every allocator call as (tid ordinal, kind, aux,
    sizes, NULL result, names of the pointers it took and returned)."""
    t = open_trace(trace)
    assert t.complete and t.end["lost_total"] == 0, t.end.get("lost")
    ev = t.events
    ev = ev[ev["kind"] >= Kind.MALLOC]
    ev = ev[np.argsort(ev["ts"], kind="stable")]
    live_now: set[int] = set()  # pointers returned and not freed since, by any process
    pids = list(dict.fromkeys(int(p) for p in ev["pid"]))
    out: list[list[tuple]] = [[] for _ in pids]
    names: list[dict[int, int]] = [{} for _ in pids]
    tids: list[dict[int, int]] = [{} for _ in pids]
    for r in ev:
        kind = Kind(int(r["kind"]))
        i = pids.index(int(r["pid"]))
        taken = int(r[POINTER_IN[kind]]) if kind in POINTER_IN else 0
        if kind in (Kind.FREE, Kind.DELETE) and taken and taken not in live_now:
            continue  # freed inside the allocator: a block no traced call returned (see above)
        live_now.discard(taken)
        given = int(r["a3"]) if kind in OUT_IN_A3 else (int(r["ret"]) & (2**64 - 1))
        if kind in (Kind.FREE, Kind.DELETE, Kind.MALLOC_TRIM, Kind.MALLOPT):
            given = 0
        if given:
            live_now.add(given)

        def name(p: int, i: int = i) -> int:
            return names[i].setdefault(p, len(names[i]) + 1) if p else 0

        tid = tids[i].setdefault(int(r["tid"]), len(tids[i]))
        sizes = tuple(int(r[f]) for f in SIZES[kind])
        out[i].append((tid, int(kind), int(r["aux"]), sizes, name(taken), name(given)))
    return out


def live(trace: str) -> tuple[int, int]:
    done = run_heapline("summary", "--json", "--all-processes", trace)
    assert done.returncode == 0, done.stderr
    a = json.loads(done.stdout)["alloc"]
    return a["live_bytes_final"], a["live_blocks_final"]


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_preload_records_what_the_uprobes_record(tmp_path, name: str) -> None:  # noqa: ANN001
    if not LIBRARY.is_file():
        pytest.skip("the preload library is not built (make)")
    cmd = WORKLOADS[name]
    up, pre = (record(tmp_path, name, m, cmd) for m in ("uprobes", "preload"))
    info = open_trace(pre).header["backend"]["allocator"]
    assert info["traced"] and info["method"] == "preload", info
    a, b = calls(up), calls(pre)
    assert len(a) == len(b), "not the same processes made allocator calls"
    for proc, (x, y) in enumerate(zip(a, b, strict=True)):
        kinds_x, kinds_y = Counter(c[1] for c in x), Counter(c[1] for c in y)
        assert kinds_x == kinds_y, f"process {proc}: calls by kind differ"
        assert Counter(c[1:4] for c in x) == Counter(c[1:4] for c in y), f"process {proc}: sizes differ"
        if len({c[0] for c in x}) == 1:  # one thread: the same calls in the same order, the same pointers
            assert x == y, f"process {proc}: the sequence of calls differs"
    assert live(up) == live(pre)
