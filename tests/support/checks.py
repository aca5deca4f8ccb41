"""Checks of a recorded trace against what a workload printed about itself (live and replayed)."""

from __future__ import annotations

import json

import numpy as np
from helpers import num, parse_report, run_heapline

from tracer.events import Kind
from tracer.tracefile import open_trace

PAGE = 4096


def summary_json(path: str) -> dict:
    r = run_heapline("summary", path, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def of_pid(ev: np.ndarray, pid: int, kind: Kind) -> np.ndarray:
    return ev[(ev["pid"] == pid) & (ev["kind"] == kind)]


def collapse(values: list[int]) -> list[int]:
    out: list[int] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def is_subsequence(needle: list[int], hay: list[int]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle)


def check_phases(trace_path: str, out: str, attached: bool) -> None:
    rep = parse_report(out)
    pid = int(rep.all("pid")[0]["pid"])
    t = open_trace(trace_path)
    assert t.complete, t.notes
    ev = t.events
    s = summary_json(trace_path)
    assert s["target"]["pid"] == pid and s["target"]["attached"] is attached
    assert s["events"]["lost"] == 0

    # the break: after every phase, exactly what sbrk(0) said
    breaks = collapse([int(r) for r in of_pid(ev, pid, Kind.BRK)["ret"]])
    phases = ["alloc", "free", "sbrk-grow", "sbrk-shrink"]
    assert is_subsequence([rep.brk(p) for p in phases], breaks), (breaks, [rep.brk(p) for p in phases])
    assert s["brk"]["start"] == rep.brk("start")
    assert s["brk"]["initial"] == rep.brk("start")
    assert s["brk"]["final"] == rep.brk("end")
    assert s["brk"]["peak"] == rep.brk("alloc")
    assert s["brk"]["grow_calls"] >= 2 and s["brk"]["shrink_calls"] >= 2

    # the mapping calls after the last break move are exactly the program's own, in order
    last_brk_ts = of_pid(ev, pid, Kind.BRK)["ts"][-1]
    mine = ev[(ev["pid"] == pid) & (ev["ts"] > last_brk_ts)]
    calls = mine[np.isin(mine["kind"], [Kind.MMAP, Kind.MUNMAP, Kind.MADVISE, Kind.MPROTECT, Kind.MREMAP])]
    expected = []
    for verb, kv in rep.lines:
        if verb == "mmap":
            expected.append((Kind.MMAP, 0, num(kv["len"]), num(kv["prot"]), num(kv["flags"]), num(kv["addr"])))
        elif verb == "munmap":
            expected.append((Kind.MUNMAP, num(kv["addr"]), num(kv["len"]), 0, 0, 0))
        elif verb == "madvise":
            expected.append((Kind.MADVISE, num(kv["addr"]), num(kv["len"]), num(kv["advice"]), 0, 0))
        elif verb == "mprotect":
            expected.append((Kind.MPROTECT, num(kv["addr"]), num(kv["len"]), num(kv["prot"]), 0, 0))
        elif verb == "mremap":
            expected.append((Kind.MREMAP, num(kv["old"]), num(kv["oldlen"]), num(kv["newlen"]), num(kv["flags"]),
                             num(kv["new"])))
    got = [(int(c["kind"]), int(c["a0"]), int(c["a1"]), int(c["a2"]),
            int(c["a3"]) if c["kind"] in (Kind.MMAP, Kind.MREMAP) else 0,
            int(c["ret"])) for c in calls]
    assert got == [tuple(int(x) for x in e) for e in expected]
    assert len(expected) == 10

    # the summary's own arithmetic on those calls
    assert s["madvise"]["by_advice"] == {"MADV_DONTNEED": 2 * PAGE, "MADV_FREE": 5 * PAGE}
    assert s["madvise"]["released_bytes"] == 7 * PAGE
    # 20 (mremapped region 1) + 5 + 7 pages of the program's own were mapped at the peak
    assert s["mmap"]["anon_bytes_peak"] - s["mmap"]["anon_bytes_final"] == 32 * PAGE
    rss_end = int(rep.all("rss")[0]["anon"])
    assert s["rss"]["anon_peak"] > 0
    # bpf: rss_stat in the kernel; strace: /proc sampled while strace holds the exit_group
    assert s["rss"]["anon_final"] == rss_end
    assert s["rss"]["anon_peak"] >= rss_end
    assert s["events"]["by_kind"]["mremap"] == 1
    assert s["target"]["exit_code"] == 0
    exits = of_pid(ev, pid, Kind.EXIT)
    assert len(exits) == 1 and exits["a2"][0] == 1
