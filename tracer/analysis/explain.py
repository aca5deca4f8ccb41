"""Findings: why memory was or was not returned, each with evidence a user can check.

Every finding has a stable code, one sentence, and evidence (addresses, sizes, times relative to
the start of the recording, the allocation's stack when recorded) that strace, /proc/PID/maps or
sbrk(0) can confirm. Everything is computed from the trace (``model.build``), never guessed:
where a number is an estimate the evidence says so.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tracer.analysis.allocmodel import process_live
from tracer.analysis.model import ExitState, Timeline, build, state_at_exit
from tracer.columns import Events
from tracer.events import Kind
from tracer.tracefile import Trace

KIB = 1024
DEFAULT_TRIM_THRESHOLD = 128 * KIB  # glibc's M_TRIM_THRESHOLD default
DEFAULT_TOP_PAD = 128 * KIB  # M_TOP_PAD: kept at the top even when trimming
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's dynamic mmap threshold stops rising here (64-bit)
TCACHE_MAX = 1032  # the largest request glibc's tcache holds
REUSE_MIN = 64 * KIB  # requested bytes freed and allocated again before reuse is worth a finding
M_TRIM_THRESHOLD = -1
U64 = 1 << 64


@dataclass
class Finding:
    code: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    ts: int | None = None  # absolute ns of the moment it is about

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _kib(n: float) -> str:
    return f"{n / KIB:,.0f} KiB" if n < 10 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _rel(ts: int, t0: int) -> float:
    return round((ts - t0) / 1e9, 6)


def trim_threshold(trace: Trace, ev: Events) -> tuple[int, str]:
    """The trim threshold in force at the end, and where it comes from."""
    value, source = DEFAULT_TRIM_THRESHOLD, "glibc's default"
    env = trace.meta.get("malloc_env") or {}
    if "MALLOC_TRIM_THRESHOLD_" in env:
        try:
            value, source = int(env["MALLOC_TRIM_THRESHOLD_"], 0), "MALLOC_TRIM_THRESHOLD_"
        except ValueError:
            pass
    m = re.search(r"glibc\.malloc\.trim_threshold=(\w+)", env.get("GLIBC_TUNABLES", ""))
    if m:
        value, source = int(m.group(1), 0), "GLIBC_TUNABLES"
    opts = ev[(ev["kind"] == Kind.MALLOPT) & (ev["a0"] == np.uint64(M_TRIM_THRESHOLD % U64)) & (ev["ret"] == 1)]
    if len(opts):
        value, source = int(opts["a1"][-1]), "mallopt(M_TRIM_THRESHOLD)"
    return value, source


def explain(trace: Trace, at_ns: int | None = None, pid: int | None = None) -> list[Finding]:
    """Findings about one process (the traced main process by default), at the end or at ``at_ns``
    nanoseconds after the start of the recording."""
    if at_ns is not None:
        t0 = int(trace.meta.get("start_ns", trace.columns["ts"][0] if len(trace.columns) else 0))
        trace = Trace(trace.path, trace.header, trace.end, trace.columns[trace.columns["ts"] <= t0 + at_ns],
                      trace.complete, trace.notes)
    tl = build(trace, pid)
    ev = trace.columns.where(trace.columns["pid"] == tl.pid)
    family = ((trace.meta.get("backend") or {}).get("allocator") or {}).get("family")
    out: list[Finding] = []
    for rule in (_trim_releases, _mmap_chunks, _heap_top, _not_consolidated, _reused, _arenas, _decay, _exit):
        out.extend(rule(trace, tl, ev, family))
    if pid is None:  # forked children that gave their memory back by exiting (no timeline each)
        cols = trace.columns
        ended = cols["pid"][(cols["kind"] == int(Kind.EXIT)) & (cols["a2"] == 1)]
        for child in sorted(set(ended.tolist()) - {tl.pid}):
            out.extend(_exit_finding(child, state_at_exit(trace, child), tl.t0))
    return sorted(out, key=lambda f: (f.ts is None, f.ts or 0))


def _heap_blocks(trace: Trace, tl: Timeline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    live = process_live(trace, tl.pid)
    brk = int(tl.breaks["brk"].iloc[-1]) if len(tl.breaks) else tl.start_brk
    inside = (live.open_ptr >= tl.start_brk) & (live.open_ptr < brk)
    return live.open_ptr[inside], live.open_size[inside], live.open_ts[inside]


def _heap_top(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """BRK_PINNED_BY_LIVE_CHUNK and TOP_BELOW_TRIM_THRESHOLD, from the blocks live at the end."""
    if family not in (None, "glibc") or not len(tl.breaks) or not (ev["kind"] >= Kind.MALLOC).any():
        return []
    brk = int(tl.breaks["brk"].iloc[-1])
    ptr, size, born = _heap_blocks(trace, tl)
    threshold, source = trim_threshold(trace, ev)
    found = []
    if len(ptr):
        top = int(np.argmax(ptr + size.astype(np.uint64)))
        top_end = int(ptr[top]) + int(size[top])
        below = int(ptr[top]) - tl.start_brk - int(size.sum() - size[top])
    else:
        top, top_end, below = -1, tl.start_brk, 0
    free_top = brk - top_end
    evidence = {"break": hex(brk), "start_brk": hex(tl.start_brk), "trim_threshold": threshold,
                "trim_threshold_from": source, "free_at_top": free_top}
    if top >= 0 and below >= threshold and free_top < threshold:
        block = {"address": hex(int(ptr[top])), "size": int(size[top]), "allocated_at_s": _rel(int(born[top]), tl.t0)}
        found.append(Finding(
            "BRK_PINNED_BY_LIVE_CHUNK",
            f"{_kib(below)} below the break is free, but the live block at {hex(int(ptr[top]))} ({int(size[top])} B, "
            f"allocated at {block['allocated_at_s']:.3f} s) sits above it, so the heap cannot shrink past it.",
            {**evidence, "free_below_block": below, "block": block}, int(born[top])))
    kept = max(threshold, DEFAULT_TOP_PAD + 64 * KIB)  # trimming leaves M_TOP_PAD; it starts at 64 KiB free
    if 4096 <= free_top < kept:
        why = (f"below the trim threshold ({_kib(threshold)}, {source})" if free_top < threshold else
               f"what glibc leaves at the top when it trims (M_TOP_PAD, {_kib(DEFAULT_TOP_PAD)}, plus alignment)")
        found.append(Finding(
            "TOP_BELOW_TRIM_THRESHOLD",
            f"The free space at the top of the heap ({_kib(free_top)}) is {why}, so free() keeps it.",
            {**evidence, "top_pad": DEFAULT_TOP_PAD}, None))
    return found


def _trim_releases(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """RELEASED_BY_TRIM: what each malloc_trim() gave back, by which call, and RSS around it."""
    out = []
    for call in ev[ev["kind"] == Kind.MALLOC_TRIM]:
        t, end = int(call["ts"]), int(call["ts"]) + int(call["dur"])
        r = tl.releases[(tl.releases["ts"] >= t) & (tl.releases["ts"] <= end)]
        if not len(r):
            continue
        rss_before = _asof(tl.rss, "anon", t - 1)
        rss_after = _asof(tl.rss, "anon", end + 2_000_000)  # the kernel's counters settle within the interval
        by_call = {k: int(v) for k, v in r.groupby("call")["bytes"].sum().items()}
        brk_before, brk_after = _asof(tl.breaks, "brk", t - 1), _asof(tl.breaks, "brk", end)
        kept_vsz = "madvise" in by_call and brk_before == brk_after
        msg = (f"malloc_trim({int(call['a0'])}) at {_rel(t, tl.t0):.3f} s gave back {_kib(r['bytes'].sum())} "
               f"({', '.join(f'{k} {_kib(v)}' for k, v in by_call.items())})")
        msg += "; RSS fell while the break and VmSize stayed." if kept_vsz else "."
        out.append(Finding("RELEASED_BY_TRIM", msg, {
            "released_bytes": int(r["bytes"].sum()), "by_call": by_call, "rss_anon_before": rss_before,
            "rss_anon_after": rss_after, "break_before": hex(brk_before or 0), "break_after": hex(brk_after or 0),
            "ranges": [[hex(int(a)), hex(int(b))] for a, b in zip(r["start"], r["end"], strict=True)][:20],
        }, t))
    return out


def _asof(frame: pd.DataFrame, col: str, ts: int) -> int | None:
    f = frame[frame["ts"] <= ts]
    return int(f[col].iloc[-1]) if len(f) else None


def _mmap_chunks(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """MMAP_CHUNK_RETURNED: munmap inside free(); glibc then raises its thresholds."""
    r = tl.releases[(tl.releases["call"] == "munmap") & (tl.releases["inside"].isin(["free", "realloc"]))]
    if not len(r):
        return []
    evidence: dict[str, Any] = {"count": len(r), "bytes": int(r["bytes"].sum()),
                                "first_at_s": _rel(int(r["ts"].iloc[0]), tl.t0)}
    msg = (f"{len(r)} block(s) of {_kib(r['bytes'].min())} or more went back to the kernel with munmap when freed "
           f"({_kib(r['bytes'].sum())} in all).")
    if family in (None, "glibc"):
        raised = int(min(r["bytes"].max(), MMAP_THRESHOLD_MAX))
        evidence["mmap_threshold_after"] = raised
        evidence["trim_threshold_after"] = 2 * raised
        msg += (f" glibc then serves blocks up to {_kib(raised)} from the heap and keeps up to "
                f"{_kib(2 * raised)} free at its top (its thresholds rise after freeing an mmapped block).")
    return [Finding("MMAP_CHUNK_RETURNED", msg, evidence, int(r["ts"].iloc[0]))]


def _not_consolidated(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """FREED_NOT_CONSOLIDATED: many small blocks freed, the heap still large, no trim since."""
    if family not in (None, "glibc") or not len(tl.breaks):
        return []
    kind = ev["kind"]
    frees = np.flatnonzero(kind == Kind.FREE)  # positions only: no copy of the events
    if len(frees) < 1000:
        return []
    heap = int(tl.breaks["heap"].iloc[-1])
    _, size, _ = _heap_blocks(trace, tl)
    free_in_heap = heap - int(size.sum())
    trims = np.flatnonzero(kind[frees[-1]:] == Kind.MALLOC_TRIM)  # after the last free (events in time order)
    sizes = ev["a0"][kind == Kind.MALLOC]
    small = int((sizes <= TCACHE_MAX).sum())
    page = int(trace.meta.get("machine", {}).get("page_size", 4096))
    if free_in_heap < 2 * DEFAULT_TRIM_THRESHOLD or len(trims) or small < len(sizes) / 2:
        return []
    estimate = max(free_in_heap - DEFAULT_TOP_PAD, 0) // page
    return [Finding(
        "FREED_NOT_CONSOLIDATED",
        f"{len(frees):,} blocks were freed, mostly small ones, and {_kib(free_in_heap)} of the heap is free but "
        f"still the process's: reusable by it, not returned; malloc_trim(0) would release about {estimate:,} pages "
        "(estimate).",
        {"frees": int(len(frees)), "small_allocations": small, "heap_bytes": heap, "free_in_heap": free_in_heap,
         "malloc_trim_estimate_pages": int(estimate), "estimate": True},
        int(ev["ts"][frees[-1]]))]


def _reused(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """REUSED_NOT_GROWN: live bytes rose again after frees while the break did not grow."""
    live, br = tl.live, tl.breaks
    if len(live) < 3 or not len(br):
        return []
    lb = live["live_bytes"].to_numpy()
    trough = int(np.argmin(lb))
    peak_before = lb[: trough + 1].max()
    regrow = lb[trough:].max() - lb[trough]
    if regrow < REUSE_MIN or peak_before - lb[trough] < REUSE_MIN:
        return []
    t_trough = int(live["ts"].iloc[trough])
    brk_max_before = br[br["ts"] <= t_trough]["brk"].max()
    brk_max_after = br["brk"].max()
    if brk_max_after > brk_max_before:
        return []
    return [Finding(
        "REUSED_NOT_GROWN",
        f"After {_kib(peak_before - lb[trough])} was freed, {_kib(regrow)} was allocated again from the memory the "
        "process kept: the break did not grow the second time.",
        {"freed": int(peak_before - lb[trough]), "allocated_again": int(regrow), "break_max": hex(int(brk_max_after))},
        t_trough)]


def _arenas(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """ARENA_RETAINED: memory kept in the heaps of non-main arenas at the end."""
    mp = tl.mappings
    if not len(mp) or family not in (None, "glibc"):  # other allocators map MAP_NORESERVE regions too
        return []
    alive = mp[(mp["ended_by"].isin(["still mapped", "exit"])) & (mp["what"] == "heap-arena") & (mp["prot"] != 0)]
    if not len(alive):
        return []
    return [Finding(
        "ARENA_RETAINED",
        f"{_kib(alive['size'].sum())} stays in the heaps of glibc's thread arenas ({len(alive)} range(s)), kept "
        "for the threads' next allocations.",
        {"bytes": int(alive["size"].sum()),
         "ranges": [[hex(int(a)), hex(int(b))] for a, b in zip(alive["start"], alive["end"], strict=True)][:20]})]


def _decay(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """ALLOCATOR_DECAY: a non-glibc allocator returning dirty pages later, by madvise."""
    if family in (None, "glibc", "unknown"):
        return []
    r = tl.releases[tl.releases["call"] == "madvise"]
    if not len(r):
        return []
    by = {k: int(v) for k, v in r.groupby("advice")["bytes"].sum().items()}
    return [Finding(
        "ALLOCATOR_DECAY",
        f"{family} kept freed pages and returned {_kib(r['bytes'].sum())} later with madvise "
        f"({', '.join(f'{k} {_kib(v)}' for k, v in by.items())}), from {_rel(int(r['ts'].iloc[0]), tl.t0):.3f} s "
        f"to {_rel(int(r['ts'].iloc[-1]), tl.t0):.3f} s.",
        {"family": family, "by_advice": by, "times_s": [_rel(int(t), tl.t0) for t in r["ts"]][:50]},
        int(r["ts"].iloc[0]))]


def _exit(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """RETURNED_AT_EXIT: the process gave everything back by exiting (its timeline at that moment)."""
    ex = np.flatnonzero((ev["kind"] == int(Kind.EXIT)) & (ev["a2"] == 1))
    if not len(ex):
        return []
    t = int(ev["ts"][ex[0]])
    last = tl.memory[tl.memory["ts"] <= t].iloc[-1]
    code = int(ev["a0"][ex[0]]) if ev["a1"][ex[0]] else None
    return _exit_finding(tl.pid, ExitState(t, int(last["footprint"]), int(last["rss_anon"]), code), tl.t0)


def _exit_finding(pid: int, st: ExitState | None, t0: int) -> list[Finding]:
    if st is None:
        return []
    return [Finding(
        "RETURNED_AT_EXIT",
        f"Process {pid} gave back its {_kib(st.footprint)} of heap and anonymous mappings "
        f"({_kib(st.rss_anon)} resident) by exiting at {_rel(st.ts, t0):.3f} s.",
        {"pid": pid, "footprint": st.footprint, "rss_anon": st.rss_anon, "exit_code": st.exit_code,
         "at_s": _rel(st.ts, t0)}, st.ts)]


def condensed(findings: list[dict[str, Any]], root: int, keep: int = 3) -> list[dict[str, Any]]:
    """``findings`` (as JSON) for a reader: when more than ``keep`` processes other than ``root``
    gave their memory back by exiting (a shell's or a build's helpers), one finding stands for
    them all, where the first was; the JSON output keeps one per process."""
    ex = [f for f in findings if f["code"] == "RETURNED_AT_EXIT" and f["evidence"].get("pid") != root]
    if len(ex) <= keep:
        return findings
    gone = {id(f) for f in ex}
    footprint = sum(int(f["evidence"].get("footprint") or 0) for f in ex)
    rss = sum(int(f["evidence"].get("rss_anon") or 0) for f in ex)
    times = [f["evidence"]["at_s"] for f in ex if f["evidence"].get("at_s") is not None]
    when = f", from {min(times):.3f} s to {max(times):.3f} s" if times else ""
    merged = {
        "code": "RETURNED_AT_EXIT",
        "message": f"{len(ex):,} other processes gave back {_kib(footprint)} of heap and anonymous mappings "
                   f"({_kib(rss)} resident) by exiting{when}; the JSON output has one finding for each.",
        "evidence": {"pids": [f["evidence"]["pid"] for f in ex], "footprint": footprint, "rss_anon": rss},
        "ts": ex[0]["ts"],
    }
    out: list[dict[str, Any]] = []
    for f in findings:
        if f is ex[0]:
            out.append(merged)
        elif id(f) not in gone:
            out.append(f)
    return out
