"""The summary of a trace, computed only from the trace file (``heapline summary [--json]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis.allocmodel import LiveSeries, live_series, process_live, since_last_exec
from tracer.analysis.model import Timeline, build
from tracer.analysis.unmatched import of_process
from tracer.columns import Events
from tracer.decode import advice_name
from tracer.events import ALLOCATOR_KINDS, KIND_NAMES, SYSCALL_KINDS, Kind
from tracer.tracefile import Trace

SUMMARY_FORMAT_VERSION = 1  # the shape of this JSON (README, "summary --json")


def process_summary(tl: Timeline, ev: Events, live: LiveSeries | None = None) -> dict[str, Any]:
    """brk, mmap, madvise, rss and allocator figures of one process: the break, the mapped bytes
    and resident memory as its timeline ``tl`` has them (model.build), the calls counted from
    ``ev`` (its events in time order) and ``live``, its live series (allocmodel.process_live: with
    the blocks a forked child got from its parent)."""
    ev = since_last_exec(ev)
    seq = tl.breaks["brk"].to_numpy(np.int64)
    diffs = np.diff(seq)
    brk = {
        "start": tl.start_brk,
        "initial": int(seq[0]) if len(seq) else 0,
        "final": int(seq[-1]) if len(seq) else 0,
        "peak": int(seq.max()) if len(seq) else 0,
        "grow_calls": int((diffs > 0).sum()),
        "shrink_calls": int((diffs < 0).sum()),
    }
    anon = tl.anon["anon_mapped"]

    adv = ev[(ev["kind"] == Kind.MADVISE) & ef.ok(ev)]
    lengths = ef.page_up(ef.madvise.length(adv), tl.page_size)
    advice = ef.madvise.advice(adv)
    by_advice = {advice_name(v): int(lengths[advice == v].sum()) for v in np.unique(advice).tolist()}
    releases = tl.releases
    released = int(releases["bytes"][releases["call"] == "madvise"].sum())

    rss = tl.rss  # cut at the exit of its last task: the teardown is not the program's RSS
    return {
        "alloc": alloc_summary(ev, live),
        "brk": brk,
        "mmap": {"anon_bytes_final": int(anon.iloc[-1]), "anon_bytes_peak": int(anon.max())},
        "madvise": {"released_bytes": released, "by_advice": by_advice},
        "rss": {"anon_peak": int(rss["anon_high"].max()) if len(rss) else 0,
                "anon_final": int(rss["anon"].iloc[-1]) if len(rss) else 0},
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
    ex = ev[(ev["kind"] == Kind.EXIT) & ef.exits.last_task(ev) & ef.exits.code_known(ev)]
    return int(ef.exits.code(ex)[-1]) if len(ex) else None


def summarize(trace: Trace, all_processes: bool = False) -> dict[str, Any]:
    meta = trace.meta
    ev = trace.columns
    root = int(meta["pid"])
    mine = ev.where(ev["pid"] == root)
    pids = [int(p) for p in np.unique(ev["pid"]).tolist()]
    if root not in pids:
        pids.insert(0, root)
    counted = ev if all_processes else mine
    out: dict[str, Any] = {
        "format_version": SUMMARY_FORMAT_VERSION,
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
    main = process_summary(build(trace), mine, process_live(trace, root))  # the timeline the findings use too
    main["alloc"]["unmatched"] = of_process(trace, root).to_json()
    out.update(main)
    if all_processes:
        procs = []
        for pid in pids:
            if pid == root:
                sub = main
            else:
                sub = process_summary(build(trace, pid), ev[ev["pid"] == pid], process_live(trace, pid))
                sub["alloc"]["unmatched"] = of_process(trace, pid).to_json()
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
            "unmatched": _sum_dicts([p["alloc"]["unmatched"] for p in procs]),
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
    missed = out["alloc"]["unmatched"]["unexplained"]
    notes = [str(n) for n in meta.get("notes") or [] if isinstance(n, str)] + list(trace.notes)
    if missed:
        notes.append(f"{missed:,} frees of blocks no traced call allocated (not glibc's own at thread exit, not "
                     "allocated before the recording or in the parent): allocator calls were missed")
    out["trace"] = {
        "backend": meta.get("backend", {}).get("name"),
        "complete": trace.complete and not missed,
        "notes": notes,
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
