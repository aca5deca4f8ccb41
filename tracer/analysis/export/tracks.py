"""What the Perfetto export shows of each traced process, taken from the analysis as it is:

- counters from its timeline's memory series (:mod:`tracer.analysis.model`, the report's lines):
  heap, anonymous mappings, footprint, RSS anon, live bytes and retained (= footprint − live),
  each as the values where it changed;
- *kept by cause*: what the allocator holds that the program freed, split as
  :func:`tracer.analysis.phases.kept_parts` splits it (the top of the main heap, free chunks
  between live blocks, fastbins, tcache, thread-arena heaps), at the moments the phases are
  taken (:func:`tracer.analysis.phases.moments`), with their total as :func:`phases.kept` gives it;
- an instant for every memory call (:func:`tracer.analysis.calls.effects`: the call as strace
  prints it, the bytes it moved, what it did) and for every finding (its code, sentence and
  evidence) at the moment it is about.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tracer.analysis.accounting import account_at
from tracer.analysis.calls import GAVE_BACK, GREW, effects, segment
from tracer.analysis.explain import explain
from tracer.analysis.model import build
from tracer.analysis.phases import PARTS, kept, kept_parts, moments
from tracer.decode import format_call
from tracer.events import KIND_NAMES
from tracer.tracefile import Trace

#: memory series of the timeline (column of Timeline.memory) -> counter name
SERIES = {
    "heap": "heap",
    "anon_mapped": "anon mappings",
    "footprint": "footprint (heap + anon mappings)",
    "rss_anon": "RSS anon",
    "live_bytes": "live",
    "retained": "retained (footprint - live)",
}
KEPT = "kept by the allocator"
EFFECTS = {GREW: "grew", GAVE_BACK: "gave back", 0: "neither"}

Arg = int | float | str | bool


@dataclass
class Counter:
    name: str
    ts: np.ndarray  # int64 ns, ascending
    values: np.ndarray  # int64 bytes
    description: str = ""


@dataclass
class Instant:
    ts: int  # ns
    name: str
    args: dict[str, Arg] = field(default_factory=dict)


@dataclass
class ProcessTracks:
    pid: int
    name: str | None
    cmdline: list[str]
    counters: list[Counter]
    calls: list[Instant]
    findings: list[Instant]


def changes(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a step series where its value changes (the first point always)."""
    if not len(values):
        return ts, values
    keep = np.r_[True, values[1:] != values[:-1]]
    return ts[keep], values[keep]


def memory_counters(trace: Trace, pid: int) -> list[Counter]:
    """The timeline's memory series of ``pid``: those it has data for (live needs the allocator
    calls, RSS anon the rss samples)."""
    tl = build(trace, pid)
    m = tl.memory
    ts = m["ts"].to_numpy(np.int64)
    out = []
    for col, name in SERIES.items():
        if (col in ("live_bytes", "retained") and not len(tl.live)) or (col == "rss_anon" and not len(tl.rss)):
            continue
        t, v = changes(ts, m[col].to_numpy(np.int64))
        out.append(Counter(name, t, v, f"the timeline's {col} series (bytes)"))
    return out


def kept_counters(trace: Trace, pid: int) -> list[Counter]:
    """What the allocator kept of what the program freed, by cause, at the phases' moments."""
    at = moments(trace, pid)
    if not len(at):
        return []
    accs = account_at(trace, at, pid)
    parts = [kept_parts(a) for a in accs]
    out = [Counter(KEPT, at, np.array([kept(a)[0] for a in accs], dtype=np.int64),
                   "what the allocator holds that the program freed (bytes, resident only)")]
    for p in PARTS:
        out.append(Counter(f"kept: {p}", at, np.array([max(x[p], 0) for x in parts], dtype=np.int64),
                           f"the part of it in {p} (bytes)"))
    return out


def call_instants(trace: Trace, pid: int) -> list[Instant]:
    tl = build(trace, pid)
    c = effects(segment(trace.columns, pid), tl, tl.page_size)
    ev = c.ev
    cols = {name: ev[name].tolist() for name in ("ts", "kind", "tid", "ret", *(f"a{i}" for i in range(6)))}
    out = []
    for i, (ts, kind) in enumerate(zip(cols["ts"], cols["kind"], strict=True)):
        record = {name: cols[name][i] for name in ("kind", "ret", *(f"a{j}" for j in range(6)))}
        out.append(Instant(int(ts), KIND_NAMES[kind], {
            "call": format_call(record),  # type: ignore[arg-type]  # the fields by name, as a record gives them
            "bytes": int(c.moved[i]), "effect": EFFECTS[int(c.effect[i])], "failed": bool(c.failed[i]),
            "tid": int(cols["tid"][i]), **({"break_after": hex(int(c.brk_after[i]))} if c.brk_after[i] else {}),
        }))
    return out


def finding_instants(findings: list[dict], end: int) -> list[Instant]:
    """One instant per finding, at its moment (the end of the recording when it has none)."""
    return [Instant(int(f["ts"]) if f.get("ts") is not None else end, str(f["code"]),
                    {"message": str(f["message"]), "evidence": json.dumps(f.get("evidence") or {}, sort_keys=True)})
            for f in findings]


def process_tracks(trace: Trace, pid: int, note: Callable[[str], None] = lambda _: None) -> ProcessTracks:
    """The tracks of one traced process; ``note`` hears why findings are missing when explaining fails."""
    cmd = [str(a) for a in trace.meta.get("command") or []] if pid == int(trace.meta["pid"]) else []
    try:
        found = [f.to_json() for f in explain(trace, pid=pid)]
    except Exception as e:  # the tracks are still worth having without the findings
        note(f"the findings of process {pid} could not be computed ({type(e).__name__}: {e}); they are left out")
        found = []
    cols = trace.columns
    end = int(trace.meta.get("end_ns") or (cols["ts"][-1] if len(cols) else 0))
    return ProcessTracks(pid, cmd[0].rsplit("/", 1)[-1] if cmd else None, cmd,
                         memory_counters(trace, pid) + kept_counters(trace, pid), call_instants(trace, pid),
                         finding_instants(found, end))


def tracks(trace: Trace, pids: list[int] | None = None,
           note: Callable[[str], None] = lambda _: None) -> list[ProcessTracks]:
    """The tracks of ``pids`` (every process the trace has events of, the traced one first, by default)."""
    if pids is None:
        seen = np.unique(trace.columns["pid"]).tolist()
        root = int(trace.meta["pid"])
        pids = [root] + [int(p) for p in seen if p != root]
    return [process_tracks(trace, p, note) for p in pids]
