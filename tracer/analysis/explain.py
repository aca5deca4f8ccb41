"""Findings: why memory was or was not returned, each with evidence a user can check.

Every finding has a stable code, one sentence, and evidence (addresses, sizes, times relative to
the start of the recording, the allocation's stack when recorded) that strace, /proc/PID/maps or
sbrk(0) can confirm. Everything is computed from the trace (``model.build``), never guessed:
where a number is an estimate the evidence says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tracer import fields as ef
from tracer.analysis import otheralloc
from tracer.analysis import thresholds as thr
from tracer.analysis.accounting import account, last_moment
from tracer.analysis.accounting import model as accounting_model
from tracer.analysis.chunks import CONSOLIDATE_FREE, MINSIZE
from tracer.analysis.finding import KIB, Finding
from tracer.analysis.finding import kib as _kib
from tracer.analysis.finding import rel_s as _rel
from tracer.analysis.gaveback import child_holds_most, given_back
from tracer.analysis.model import ExitState, Timeline, build, state_at_exit
from tracer.analysis.phases import phases
from tracer.analysis.sites import block_stack, frame_json, site_text
from tracer.columns import Events
from tracer.events import Kind
from tracer.tracefile import Trace

REUSE_MIN = 64 * KIB  # requested bytes freed and allocated again before reuse is worth a finding
FREE_CALL_NS = 50_000_000  # the releases of one allocator call (a malloc_trim madvises chunk after chunk)
RELEASE_MIN = 64 * KIB  # a pinned block is worth a finding when freeing it would release this much


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
    for rule in (_trim_releases, _mmap_chunks, _heap_top, _not_consolidated, _reused, _arenas, _decay, _kept,
                 given_back, _exit):
        out.extend(rule(trace, tl, ev, family))
    if pid is None:  # the traced process: its children, who may hold more than it
        out.extend(child_holds_most(trace, tl))
    if pid is None:  # forked children that gave their memory back by exiting (no timeline each)
        cols = trace.columns
        ended = cols["pid"][(cols["kind"] == int(Kind.EXIT)) & ef.exits.last_task(cols)]
        for child in sorted(set(ended.tolist()) - {tl.pid}):
            out.extend(_exit_finding(child, state_at_exit(trace, child), tl.t0))
    return sorted(out, key=lambda f: (f.ts is None, f.ts or 0))


def _glibc_heap(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> dict[str, Any] | None:
    """The accounting at the moment explained, when glibc's heap is what was traced."""
    if family not in (None, "glibc") or not len(tl.breaks) or not (ev["kind"] >= Kind.MALLOC).any():
        return None
    return account(trace, last_moment(trace, tl.pid), tl.pid)


def _heap_top(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """BRK_PINNED_BY_LIVE_CHUNK and TOP_BELOW_TRIM_THRESHOLD, from the accounting at the moment.

    Pinned: freeing the highest live chunk would merge it with the free chunk below it and the top,
    and glibc's free would then trim (systrim keeps M_TOP_PAD) at least 64 KiB: the heap could shrink
    but for that block. With the free memory spread in runs between live blocks instead, freeing the
    highest one releases little, and no such claim is made."""
    acc = _glibc_heap(trace, tl, ev, family)
    if acc is None:
        return []
    h, th = acc["heap"], acc["thresholds"]
    page = int(trace.meta.get("machine", {}).get("page_size", 4096))
    found = []
    evidence = {"break": hex(h["start"] + h["size"]), "start_brk": hex(h["start"]), "heap": _figures(h),
                "thresholds": th}
    top = h.get("highest_live")
    if top is not None:
        merged = top["top_if_freed"]
        released = (max(merged - MINSIZE - 1 - th["top_pad"], 0) & ~(page - 1)) if merged >= th["trim"] else 0
        if released >= RELEASE_MIN and merged >= CONSOLIDATE_FREE:
            at = _rel(top["allocated_at_ns"], tl.t0)
            rest = max(h["free"] - top["free_below"] - h["top"], 0)
            others = h["free_runs"] - (1 if top["free_below"] else 0)
            msg = (f"The live block at {top['address']} ({top['size']:,} B, allocated at {at:.3f} s) is the highest "
                   f"in the heap, above {_kib(top['free_below'])} of free heap: freeing it would let glibc lower the "
                   f"break by {_kib(released)} (trim threshold {_kib(th['trim'])}, keeping M_TOP_PAD "
                   f"{_kib(th['top_pad'])}).")
            if others > 0:
                msg += f" {_kib(rest)} more is free in {others:,} other free chunk(s) between live blocks."
            block = dict(top)
            stack = block_stack(trace, tl.pid, int(top["address"], 16), int(top["allocated_at_ns"]))
            if stack:
                msg += f" It was allocated by {site_text(stack)}."
                block["stack"] = [frame_json(f) for f in stack]
            found.append(Finding(
                "BRK_PINNED_BY_LIVE_CHUNK", msg,
                {**evidence, "block": block, "release_if_freed": released, "free_below_block": top["free_below"]},
                top["allocated_at_ns"]))
    if 4096 <= h["top"] and (h["top"] < th["trim"] or h["top"] - th["top_pad"] < page + MINSIZE + 1):
        why = (f"below the trim threshold in force ({_kib(th['trim'])}, {th['source']})" if h["top"] < th["trim"] else
               f"what glibc leaves at the top when it trims (M_TOP_PAD, {_kib(th['top_pad'])})")
        found.append(Finding(
            "TOP_BELOW_TRIM_THRESHOLD",
            f"The free space at the top of the heap ({_kib(h['top'])}) is {why}, so free() keeps it.",
            {**evidence, "top": h["top"], "top_pad": th["top_pad"]}, None))
    return found


def _figures(h: dict[str, Any]) -> dict[str, Any]:
    keys = ("size", "in_use", "free", "top", "cached", "fastbins", "live_requested", "free_runs", "largest_free_run")
    return {k: h.get(k) for k in keys}


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
        pad = int(ef.malloc_trim.pad(call))
        msg = (f"malloc_trim({pad}) at {_rel(t, tl.t0):.3f} s gave back {_kib(r['bytes'].sum())} "
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
    """MMAP_CHUNK_RETURNED: munmap inside free(); and whether glibc raised its thresholds after it (it
    does only for a chunk above the mmap threshold and at most 32 MiB, unless they were set)."""
    r = tl.releases[(tl.releases["call"] == "munmap") & (tl.releases["inside"].isin(["free", "realloc"]))]
    if not len(r):
        return []
    evidence: dict[str, Any] = {"count": len(r), "bytes": int(r["bytes"].sum()),
                                "first_at_s": _rel(int(r["ts"].iloc[0]), tl.t0)}
    msg = (f"{len(r)} block(s) of {_kib(r['bytes'].min())} or more went back to the kernel with munmap when freed "
           f"({_kib(r['bytes'].sum())} in all).")
    if family in (None, "glibc") and (ev["kind"] >= Kind.MALLOC).any():
        m = accounting_model(trace, tl.pid)
        rises = [h for h in m.thresholds if h.source.startswith("dynamic")]
        end = thr.at(m.thresholds, last_moment(trace, tl.pid))
        evidence["thresholds_after"] = end.to_json()
        if rises:
            evidence["raised_at_s"] = [_rel(h.ts, tl.t0) for h in rises][:20]
            msg += (f" glibc then raised its mmap threshold to {_kib(end.mmap)} and its trim threshold to "
                    f"{_kib(end.trim)}: blocks up to that size now come from the heap, and up to {_kib(end.trim)} "
                    "stays free at its top.")
        else:
            why = ("they were set explicitly" if not end.dynamic else "every chunk freed was over 32 MiB or below "
                   "the threshold already")
            msg += f" glibc's thresholds did not rise ({why}): mmap threshold {_kib(end.mmap)}."
    return [Finding("MMAP_CHUNK_RETURNED", msg, evidence, int(r["ts"].iloc[0]))]


def _not_consolidated(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """FREED_NOT_CONSOLIDATED: many blocks freed, much of the heap free in chunks below live ones (or in
    the tcache and fastbins), no trim since: what glibc counts as free, not requested bytes."""
    acc = _glibc_heap(trace, tl, ev, family)
    kind = ev["kind"]
    frees = np.flatnonzero(kind == Kind.FREE)
    if acc is None or len(frees) < 1000:
        return []
    h = acc["heap"]
    held = h["free"] - h["top"] + h.get("cached", 0)  # free below live chunks, fastbins, tcache
    trims = np.flatnonzero(kind[frees[-1]:] == Kind.MALLOC_TRIM)
    if held < 2 * thr.DEFAULT_TRIM or len(trims):
        return []
    est = acc["malloc_trim_estimate"]
    return [Finding(
        "FREED_NOT_CONSOLIDATED",
        f"{len(frees):,} blocks were freed and {_kib(held)} of the heap is free but below live blocks "
        f"({h['free_runs']:,} free chunks, the largest {_kib(h['largest_free_run'])}; fastbins "
        f"{_kib(h.get('fastbins', 0))}, tcache {_kib(h.get('cached', 0))}): reusable by the process, not returned; "
        f"malloc_trim(0) would give back about {_kib(est)}.",
        {"frees": int(len(frees)), "heap": _figures(h), "held": held, "malloc_trim_estimate": est},
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
    k = ev["kind"]
    if ((k == Kind.MREMAP) & (ev["ts"] > t_trough)).any():  # grown by mremap: new pages, not memory kept
        return []
    return [Finding(
        "REUSED_NOT_GROWN",
        f"After {_kib(peak_before - lb[trough])} was freed, {_kib(regrow)} was allocated again from the memory the "
        "process kept: the break did not grow the second time.",
        {"freed": int(peak_before - lb[trough]), "allocated_again": int(regrow), "break_max": hex(int(brk_max_after))},
        t_trough)]


def _arenas(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """ARENA_RETAINED: free memory kept in the heaps of glibc's thread arenas at the moment explained."""
    acc = _glibc_heap(trace, tl, ev, family)
    if acc is None or not acc["arenas"]["count"]:
        return []
    ar = acc["arenas"]
    if ar["free"] < 64 * KIB:
        return []
    k = ev["kind"]
    ended = set(ev["tid"][k == Kind.EXIT].tolist())
    threads = (k == Kind.FORK) & ef.forks.thread(ev)
    alive = [int(t) for t in np.unique(ef.forks.child(ev)[threads]).tolist() if int(t) not in ended]
    who = ("kept for the threads still running" if alive else
           "kept although the threads that used them have exited (glibc reuses arenas for new threads)")
    return [Finding(
        "ARENA_RETAINED",
        f"{_kib(ar['free'])} is free but kept in {ar['count']} thread-arena heap(s) ({_kib(ar['committed'])} "
        f"committed of {_kib(ar['reserved'])} reserved, {_kib(ar['in_use'])} in use), {who}.",
        {"arenas": {k2: v for k2, v in ar.items() if k2 != "heaps"}, "threads_running": len(alive),
         "heaps": [hex(h["start"]) for h in ar["heaps"]][:20]})]


def _decay(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """ALLOCATOR_DECAY: a non-glibc allocator returning dirty pages later, by madvise."""
    if family in (None, "glibc", "unknown"):
        return []
    frees = ev["ts"][(ev["kind"] == Kind.FREE) | (ev["kind"] == Kind.DELETE)]
    if not len(frees):
        return []
    r = tl.releases[(tl.releases["call"] == "madvise") & (tl.releases["ts"] > int(frees[0]))]
    mine = otheralloc.in_regions(trace, tl, r["start"].to_numpy(np.int64), r["end"].to_numpy(np.int64))
    r = r[mine]  # inside what its own calls mapped: not thread stacks or the program's own mappings
    if not len(r) or r["bytes"].sum() < 64 * KIB:  # after frees, and more than a start-up probe
        return []
    by = {k: int(v) for k, v in r.groupby("advice")["bytes"].sum().items()}
    return [Finding(
        "ALLOCATOR_DECAY",
        f"{family} kept freed pages and returned {_kib(r['bytes'].sum())} later with madvise "
        f"({', '.join(f'{k} {_kib(v)}' for k, v in by.items())}), from {_rel(int(r['ts'].iloc[0]), tl.t0):.3f} s "
        f"to {_rel(int(r['ts'].iloc[-1]), tl.t0):.3f} s.",
        {"family": family, "by_advice": by, "times_s": [_rel(int(t), tl.t0) for t in r["ts"]][:50]},
        int(r["ts"].iloc[0]))]


def _kept(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """MEMORY_KEPT_AFTER_FREE: each span in which much of what the program freed stayed with the
    allocator (glibc: its free chunks, top, caches; another: its regions' pages in RAM beyond the live
    blocks)."""
    if family == "unknown" or not (ev["kind"] >= Kind.MALLOC).any():
        return []
    holder = family if family not in (None, "glibc") else "glibc"
    out = []
    last = last_moment(trace, tl.pid)
    for ph in phases(trace, tl.pid):
        parts = ", ".join(f"{name} {_kib(v)}" for name, v in list(ph.parts.items())[:3])
        rel = tl.releases[(tl.releases["ts"] >= ph.peak_at) & (tl.releases["ts"] <= ph.end)]
        by = rel[rel["inside"].notna()]
        if len(by):  # the first allocator call that released memory after the peak, with all it released
            first = by.iloc[0]
            by = by[(by["inside"] == first["inside"]) & (by["ts"] - int(first["ts"]) < FREE_CALL_NS)]
        if ph.end >= last:
            ended = "kept until the end"
        elif len(by):
            ended = (f"{first['inside']} from {_rel(int(first['ts']), tl.t0):.3f} s gave back "
                     f"{_kib(int(by['bytes'].sum()))} ({', '.join(sorted(set(by['call'])))})")
        else:
            after = account(trace, ph.end, tl.pid)
            # a moment with no main heap has no live_requested (accounting's fallback heap)
            grew = after["heap"].get("live_requested", 0) > ph.accounting["heap"].get("live_requested", 0)
            ended = "then allocated again" if grew else "then released"
        h = ph.accounting["heap"]
        out.append(Finding(
            "MEMORY_KEPT_AFTER_FREE",
            f"{_kib(ph.kept)} freed by the program stayed with {holder} from {_rel(ph.start, tl.t0):.3f} s to "
            f"{_rel(ph.end, tl.t0):.3f} s ({parts}); {ended}.",
            {"from_s": _rel(ph.start, tl.t0), "to_s": _rel(ph.end, tl.t0), "peak_at_s": _rel(ph.peak_at, tl.t0),
             "kept": ph.kept, "parts": ph.parts, "heap": _figures(h),
             "malloc_trim_estimate": ph.accounting["malloc_trim_estimate"], "ended": ended},
            ph.start))
    return out


def _exit(trace: Trace, tl: Timeline, ev: Events, family: str | None) -> list[Finding]:
    """RETURNED_AT_EXIT: the process gave everything back by exiting (its timeline at that moment)."""
    ex = np.flatnonzero((ev["kind"] == int(Kind.EXIT)) & ef.exits.last_task(ev))
    if not len(ex):
        return []
    t = int(ev["ts"][ex[0]])
    last = tl.at(t)
    code = ef.exits.code_at(ev, int(ex[0]))
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
