"""The heap accounting against glibc's own: mallinfo2() at each moment the workload marked.

``workloads/accounting.c`` prints mallinfo2(), sbrk(0) and RssAnon, without allocating, with the
CLOCK_MONOTONIC time of the mark; the accounting of the trace at that time must give the same
bytes, exactly: size (arena), in use (uordblks), free (fordblks), top (keepcost), fastbin bytes
(fsmblks), free chunks (ordblks - 1) and mmapped chunks (hblkhd).
"""

from __future__ import annotations

import os

import pytest
from helpers import needs_root, parse_report, run_heapline, workload

from tracer.analysis.accounting import account
from tracer.tracefile import open_trace

pytestmark = [pytest.mark.root, needs_root]
BYPASS = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"  # freed chunks go straight to the bins


def record(tmp_path, mode: str, env: dict[str, str] | None = None):  # noqa: ANN001, ANN201
    trace = tmp_path / f"{mode}.trace"
    args = [a for k, v in (env or {}).items() for a in ("-E", f"{k}={v}")]
    r = run_heapline("record", "-q", "-o", str(trace), *args, "--", workload("accounting"), mode)
    assert r.returncode == 0, r.stderr
    return open_trace(str(trace)), parse_report(r.stdout)


def glibc(mark: dict[str, str]) -> dict[str, int]:
    return {k: int(mark[k]) for k in ("arena", "uordblks", "fordblks", "keepcost", "fsmblks", "ordblks", "hblkhd")}


def ours(a: dict) -> dict[str, int]:
    h, heaps = a["heap"], a["arenas"]["heaps"]
    return {
        "arena": h["size"] + sum(x["size"] for x in heaps),
        "uordblks": h["in_use"] + sum(x["in_use"] for x in heaps),
        "fordblks": h["free"] + sum(x["free"] for x in heaps),
        "keepcost": h["top"],  # glibc reports the main arena's top alone
        "fsmblks": h["fastbins"] + sum(x["fastbins"] for x in heaps),
        "ordblks": h["free_runs"] + 1 + sum(x["free_runs"] + 1 for x in heaps),  # free chunks and each top
        "hblkhd": a["mmapped_chunks"]["bytes"],
    }


@pytest.mark.parametrize(("mode", "env"), [
    ("frag", None), ("small", None), ("small", {"GLIBC_TUNABLES": BYPASS}), ("thresholds", None),
    ("pinned", None), ("threads", None),
])
def test_accounting_equals_mallinfo2_at_every_mark(tmp_path, mode: str, env: dict | None) -> None:
    trace, rep = record(tmp_path, mode, env)
    marks = rep.all("mark")
    assert len(marks) >= 3
    for mark in marks:
        a = account(trace, int(mark["ts"]))
        assert a["exact"]
        assert ours(a) == glibc(mark), mark["name"]
        assert a["heap"]["start"] + a["heap"]["size"] == int(mark["sbrk"], 16), mark["name"]


def test_each_arena_equals_malloc_info(tmp_path) -> None:
    """threads: malloc_info()'s figures of every arena (the main one and each thread's) at each mark.
    Its "rest" sums the bins' raw size fields, each with PREV_INUSE set (a binned chunk's neighbour
    below is in use), and the top: our free bytes (less fastbins) plus one per free chunk."""
    trace, rep = record(tmp_path, "threads")
    arenas = rep.all("arena")
    for mark in rep.all("mark"):
        glibc_arenas = sorted((int(x["system"]), int(x["rest_count"]), int(x["rest_size"]), int(x["fast_count"]),
                               int(x["fast_size"])) for x in arenas if x["name"] == mark["name"])
        a = account(trace, int(mark["ts"]))
        heaps = [a["heap"], *a["arenas"]["heaps"]]
        assert len(glibc_arenas) == 3 and len(heaps) == 3, mark["name"]
        ours = sorted((h["size"], h["free_runs"] + 1, h["free"] - h["fastbins"] + h["free_runs"], h["fastbin_chunks"],
                       h["fastbins"]) for h in heaps)
        assert ours == glibc_arenas, mark["name"]


def test_trim_estimate_is_what_malloc_trim_gave_back(tmp_path) -> None:
    trace, rep = record(tmp_path, "frag")
    marks = {m["name"]: m for m in rep.all("mark")}
    before, after = marks["all_but_last_freed"], marks["trimmed"]
    given_back = int(before["rss_anon"]) - int(after["rss_anon"])
    estimate = account(trace, int(before["ts"]))["malloc_trim_estimate"]
    assert given_back > 10 << 20
    assert abs(estimate - given_back) <= 0.1 * given_back, (estimate, given_back)
    # the break moved as systrim(0) moves it: all of the top but its last partial page
    heap = account(trace, int(before["ts"]))["heap"]
    assert int(before["sbrk"], 16) - int(after["sbrk"], 16) == (heap["top"] - 33) & ~4095


def test_trim_estimate_counts_only_pages_in_ram(tmp_path) -> None:
    """untouched: a freed 20 MiB block whose pages were never written holds no RAM, so malloc_trim
    gives back only the written runs freed beside it; the recorder's pagemap samples say which."""
    trace, rep = record(tmp_path, "untouched")
    marks = {m["name"]: m for m in rep.all("mark")}
    before, after = marks["freed"], marks["trimmed"]
    given_back = int(before["rss_anon"]) - int(after["rss_anon"])
    a = account(trace, int(before["ts"]))
    assert given_back > 4 << 20
    assert a["heap"]["free"] > 20 << 20  # glibc's own free bytes include the unwritten block
    assert abs(a["malloc_trim_estimate"] - given_back) <= 0.1 * given_back, (a["malloc_trim_estimate"], given_back)


def test_thresholds_in_force_say_where_the_next_large_block_goes(tmp_path) -> None:
    trace, rep = record(tmp_path, "thresholds")
    marks = {m["name"]: m for m in rep.all("mark")}
    where = {w["name"]: w for w in rep.all("where")}
    checks = [("first_1mib", None), ("second_1mib", "first_1mib_freed"), ("two_mib", "forty_mib_freed")]
    for block, after in checks:
        ts = int(marks[after]["ts"]) if after else int(trace.meta["start_ns"])
        th = account(trace, ts)["thresholds"]
        chunk = max(32, (int(where[block]["size"]) + 8 + 15) & ~15)
        mmapped = chunk >= th["mmap"]  # the heap's top is smaller than these requests here
        assert mmapped == (where[block]["heap"] == "0"), (block, th)
    # the 1 MiB chunk freed raised the threshold to its size; the 40 MiB one (past 32 MiB) did not
    th = account(trace, int(marks["forty_mib_freed"]["ts"]))["thresholds"]
    assert (th["mmap"], th["trim"], th["dynamic"]) == (1052672, 2 * 1052672, True)


def test_thresholds_set_by_the_environment_stop_the_rise(tmp_path) -> None:
    trace, rep = record(tmp_path, "thresholds", {"MALLOC_MMAP_THRESHOLD_": "4194304"})
    marks = {m["name"]: m for m in rep.all("mark")}
    where = {w["name"]: w for w in rep.all("where")}
    th = account(trace, int(marks["all_freed"]["ts"]))["thresholds"]
    assert (th["mmap"], th["dynamic"], th["source"]) == (4194304, False, "MALLOC_MMAP_THRESHOLD_")
    assert where["first_1mib"]["heap"] == "1" and where["two_mib"]["heap"] == "1"
    assert where["forty_mib"]["heap"] == "0"


def test_cli_prints_the_accounting_at_a_mark(tmp_path) -> None:
    trace, rep = record(tmp_path, "pinned")
    mark = {m["name"]: m for m in rep.all("mark")}["pinned"]
    at = (int(mark["ts"]) - int(trace.meta["start_ns"])) / 1e9
    r = run_heapline("explain", str(trace.path), "--at", f"{at:.9f}", "--json")
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    acc = out["accounting"]
    assert acc["heap"]["free"] == int(mark["fordblks"]) and acc["heap"]["in_use"] == int(mark["uordblks"])
    assert [f for f in out["findings"] if f["code"] == "BRK_PINNED_BY_LIVE_CHUNK"]
    r = run_heapline("explain", str(trace.path), "--at", f"{at:.9f}")
    assert r.returncode == 0 and "in use" in r.stdout, r.stdout
    assert os.path.exists(trace.path)


def test_a_phase_of_memory_kept_after_free_ends_with_the_trim(tmp_path) -> None:
    """small: 3 MiB of 32-byte chunks freed stay with glibc (RssAnon says so) until malloc_trim(0)."""
    trace, rep = record(tmp_path, "small")
    marks = {m["name"]: m for m in rep.all("mark")}
    t0 = int(trace.meta["start_ns"])
    from tracer.analysis.explain import explain

    (kept,) = [f for f in explain(trace) if f.code == "MEMORY_KEPT_AFTER_FREE"]
    ev = kept.evidence
    freed = int(marks["all_freed"]["fordblks"]) - int(marks["allocated"]["fordblks"])
    assert int(marks["all_freed"]["rss_anon"]) - int(marks["trimmed"]["rss_anon"]) > 2 << 20  # it was resident
    assert abs(ev["kept"] - freed) <= 0.1 * freed, (ev["kept"], freed)
    assert ev["from_s"] <= (int(marks["all_freed"]["ts"]) - t0) / 1e9
    assert (int(marks["all_freed"]["ts"]) - t0) / 1e9 <= ev["to_s"] <= (int(marks["trimmed"]["ts"]) - t0) / 1e9
    assert ev["ended"].startswith("malloc_trim from")


SETTLE_MS = 600  # the workload holds each marked state this long: the recorder samples smaps every 0.25 s


@pytest.mark.parametrize("mode", ["thresholds", "frag", "threads"])
def test_resident_memory_by_cause_equals_smaps(tmp_path, mode: str) -> None:
    """Where resident memory is, against what the workload read from its own /proc/self/smaps at
    each mark (then held still): the [heap] mapping's and the main stack's Anonymous bytes exactly,
    every mmapped chunk resident in full where its mapping says so, and the parts summing to the
    sample, which equals the workload's own total (from its second mark on: its first read of smaps
    touches the buffer it reads into and deepens its stack)."""
    trace, rep = record(tmp_path, mode, {"HL_SETTLE_MS": str(SETTLE_MS)})
    truth = {r["name"]: r for r in rep.all("resident")}
    vmas = rep.all("vma")
    marks = rep.all("mark")
    for i, mark in enumerate(marks):
        a = account(trace, int(mark["ts"]) + (SETTLE_MS - 50) * 1_000_000)
        r, w = a["resident"], truth[mark["name"]]
        assert r["sampled_at_s"] is not None, mark["name"]
        sampled_ns = trace.meta["start_ns"] + r["sampled_at_s"] * 1e9
        assert int(mark["ts"]) < sampled_ns, "the sample must be of the marked state"
        assert r["heap"] == int(w["heap"]), mark["name"]
        if mode != "threads" and i:
            assert r["stacks"] == int(w["stack"]), mark["name"]
        assert r["stacks"] >= int(w["stack"]), mark["name"]
        assert sum(r[c] for c in ("heap", "arenas", "mmapped_chunks", "stacks", "other")) == r["sampled_anon"]
        if i:
            assert r["sampled_anon"] == int(w["total"]), mark["name"]
        chunks = a["mmapped_chunks"]["bytes"]
        assert r["mmapped_chunks"] == chunks, mark["name"]
        held = [int(v["anon"]) for v in vmas if v["name"] == mark["name"] and v["of"] != "second_1mib"]
        assert chunks <= sum(held) or not chunks, mark["name"]
        if mode == "threads" and a["arenas"]["count"]:
            assert 0 < r["arenas"] <= a["arenas"]["committed"], mark["name"]
