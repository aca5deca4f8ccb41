"""The summary of a trace, computed only from the trace file (``heapline summary [--json]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tracer.analysis.addrspace import ERRNO_MAX, AddressSpace
from tracer.analysis.allocmodel import LiveSeries, live_series, process_live, since_last_exec
from tracer.analysis.model import build, map_snapshot, replay_mappings
from tracer.columns import Events
from tracer.decode import RELEASE_ADVICE, advice_name
from tracer.events import ALLOCATOR_KINDS, KIND_NAMES, SYSCALL_KINDS, Kind
from tracer.tracefile import FORMAT_VERSION, Trace


def _ok(ev: Events) -> np.ndarray:
    """Calls that succeeded (ret is not -errno)."""
    r = ev["ret"]
    return ~((r < 0) & (r >= -ERRNO_MAX))


def process_summary(ev: Events, page_size: int, snapshot: dict | None, live: LiveSeries | None = None,
                    mapped: tuple[int, int] | None = None) -> dict[str, Any]:
    """brk, mmap, madvise, rss and allocator figures of one process (its events in time order;
    ``live`` and ``mapped``, its live series (allocmodel.process_live: with the blocks a forked
    child got from its parent) and its (peak, final) bytes of anonymous mappings, when known)."""
    ev = since_last_exec(ev)
    kind = ev["kind"]
    brk_ev = ev[(kind == Kind.BRK)]
    rets = brk_ev["ret"].astype(np.int64)
    if snapshot is not None and not (kind == Kind.EXEC).any():
        start, initial = int(snapshot["start_brk"]), int(snapshot["brk"])
    elif len(rets):
        start = initial = int(rets[0])
    else:
        start = initial = 0
    seq = np.concatenate([[initial], rets]) if initial else rets
    diffs = np.diff(seq) if len(seq) else np.empty(0, dtype=np.int64)
    brk = {
        "start": start,
        "initial": initial,
        "final": int(seq[-1]) if len(seq) else 0,
        "peak": int(seq.max()) if len(seq) else 0,
        "grow_calls": int((diffs > 0).sum()),
        "shrink_calls": int((diffs < 0).sum()),
    }

    if mapped is None:  # (peak, final) bytes of anonymous mappings: replay the mapping calls
        space = AddressSpace(page_size)
        if snapshot is not None and not (kind == Kind.EXEC).any():
            map_snapshot(space, snapshot)
        peak = space.anon_bytes
        for _ in replay_mappings(ev, np.ascontiguousarray(kind), space):
            peak = max(peak, space.anon_bytes)
        mapped = (peak, space.anon_bytes)

    adv = ev[(kind == Kind.MADVISE) & _ok(ev)]
    lengths = (adv["a1"] + np.uint64(page_size - 1)) & ~np.uint64(page_size - 1)
    by_advice: dict[str, int] = {}
    for value in np.unique(adv["a2"]).tolist():
        by_advice[advice_name(value)] = int(lengths[adv["a2"] == value].sum())
    released = int(lengths[np.isin(adv["a2"], np.array(sorted(RELEASE_ADVICE), dtype=np.uint64))].sum())

    rss = ev[kind == Kind.RSS]
    exits = np.flatnonzero((kind == Kind.EXIT) & (ev["a2"] == 1))
    if len(exits):  # the address space is torn down after the last task exits: not the program's RSS
        rss = rss[rss["ts"] <= ev["ts"][exits[0]]]
    anon = rss["a0"].astype(np.int64)
    highs = np.maximum(anon, rss["a4"].astype(np.int64))  # a4: the peak between coalesced samples
    if snapshot is not None and not (kind == Kind.EXEC).any():
        first = np.array([int(snapshot["rss"]["anon"])], dtype=np.int64)
        anon, highs = np.concatenate([first, anon]), np.concatenate([first, highs])
    return {
        "alloc": alloc_summary(ev, live),
        "brk": brk,
        "mmap": {"anon_bytes_final": mapped[1], "anon_bytes_peak": mapped[0]},
        "madvise": {"released_bytes": released, "by_advice": by_advice},
        "rss": {"anon_peak": int(highs.max()) if len(highs) else 0, "anon_final": int(anon[-1]) if len(anon) else 0},
    }


def alloc_summary(ev: Events, live: LiveSeries | None = None) -> dict[str, Any]:
    """Allocator calls of one process (its events in time order)."""
    kinds, n = np.unique(ev["kind"], return_counts=True)
    counts = dict(zip(kinds.tolist(), n.tolist(), strict=True))
    live = live_series(ev) if live is None else live
    return {
        "calls": {KIND_NAMES[int(k)]: counts.get(int(k), 0) for k in ALLOCATOR_KINDS},
        "live_bytes_final": live.bytes_final,
        "live_bytes_peak": live.bytes_peak,
        "live_blocks_final": live.blocks_final,
        "unmatched_frees": live.unmatched_frees,
        "trim_calls": counts.get(int(Kind.MALLOC_TRIM), 0),
    }


def _by_kind(ev: Events) -> dict[str, int]:
    counts = {KIND_NAMES[int(k)]: 0 for k in SYSCALL_KINDS}
    kinds, n = np.unique(ev["kind"], return_counts=True)
    for k, c in zip(kinds.tolist(), n.tolist(), strict=False):
        counts[KIND_NAMES.get(k, f"kind{k}")] = c
    return counts


def _exit_code(trace: Trace, ev: Events) -> int | None:
    meta = trace.meta
    if not meta.get("attached") and meta.get("exit_code") is not None:
        return int(meta["exit_code"])
    ex = ev[(ev["kind"] == Kind.EXIT) & (ev["a2"] == 1) & (ev["a1"] == 1)]
    return int(ex["a0"][-1]) if len(ex) else None


def summarize(trace: Trace, all_processes: bool = False) -> dict[str, Any]:
    meta = trace.meta
    ev = trace.columns
    root = int(meta["pid"])
    page = int(meta.get("machine", {}).get("page_size", 4096))
    snapshot = meta.get("snapshot")
    mine = ev.where(ev["pid"] == root)
    pids = [int(p) for p in np.unique(ev["pid"]).tolist()]
    if root not in pids:
        pids.insert(0, root)
    counted = ev if all_processes else mine
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "target": {
            "pid": root,
            "command": list(meta.get("command", [])),
            "attached": bool(meta.get("attached")),
            "exit_code": _exit_code(trace, mine),
        },
        "events": {
            "total": int(len(counted)),
            "lost": int(meta.get("lost_total", 0) or 0),
            "by_kind": _by_kind(counted),
        },
    }
    anon = build(trace).memory["anon_mapped"]  # the timeline the findings use too
    main = process_summary(mine, page, snapshot, live=process_live(trace, root),
                           mapped=(int(anon.max()), int(anon.iloc[-1])))
    out.update(main)
    if all_processes:
        procs = []
        for pid in pids:
            sub = main if pid == root else process_summary(ev[ev["pid"] == pid], page, None, process_live(trace, pid))
            procs.append({"pid": pid, **sub})
        out["brk"] = {**main["brk"]}
        out["brk"]["grow_calls"] = sum(p["brk"]["grow_calls"] for p in procs)
        out["brk"]["shrink_calls"] = sum(p["brk"]["shrink_calls"] for p in procs)
        out["madvise"] = {
            "released_bytes": sum(p["madvise"]["released_bytes"] for p in procs),
            "by_advice": _sum_dicts([p["madvise"]["by_advice"] for p in procs]),
        }
        out["alloc"] = {
            **main["alloc"],
            "calls": _sum_dicts([p["alloc"]["calls"] for p in procs]),
            "unmatched_frees": sum(p["alloc"]["unmatched_frees"] for p in procs),
            "trim_calls": sum(p["alloc"]["trim_calls"] for p in procs),
        }
        out["processes"] = procs
    allocator = (meta.get("backend") or {}).get("allocator") or {"traced": False, "reason": "not recorded"}
    out["alloc"]["traced"] = bool(allocator.get("traced"))
    keys = ("library", "family", "build_id", "reason")
    out["alloc"]["allocator"] = {k: allocator.get(k) for k in keys if k in allocator}
    ended = ((meta.get("backend_end") or {}).get("allocator") or {}).get("other_allocators")
    if ended:  # children that got malloc elsewhere: their calls were not traced
        out["alloc"]["other_allocators"] = ended
    cost = allocator.get("overhead") or {}
    calls = sum(out["alloc"]["calls"].values())
    out["alloc"]["traced_calls"] = calls
    if cost.get("per_call_ns") is not None:
        # measured on the recording machine (tracer/record/backends/bpf/calibrate.py), not assumed
        out["alloc"]["added_time_s"] = round(calls * cost["per_call_ns"] / 1e9, 6)
        out["alloc"]["cost_per_call_ns"] = cost["per_call_ns"]
    from tracer.analysis.explain import explain

    out["findings"] = [f.to_json() for f in explain(trace)]
    duration = meta.get("duration_ns")
    if duration is None and len(ev):
        duration = int(ev["ts"][-1]) - int(meta.get("start_ns", ev["ts"][0]))
    out["duration_s"] = round((duration or 0) / 1e9, 6)
    out["trace"] = {
        "backend": meta.get("backend", {}).get("name"),
        "complete": trace.complete,
        "notes": trace.notes,
        "lost_per_cpu": {str(k): int(v) for k, v in (meta.get("lost") or {}).items()},
        "processes": pids,
        "libc": meta.get("libc"),
    }
    return out


def _sum_dicts(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out
