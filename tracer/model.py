"""Trace -> timeline frames (pandas), computed from the trace file alone.

One :class:`Timeline` per process address space:

- ``breaks``: the program break after every ``brk`` call, and the heap size (break - start_brk);
- ``mappings``: every mapping piece as an interval with its lifetime, protection, flags, whether
  it is anonymous, and what it is (``heap-arena`` for glibc's 64 MiB thread heaps, ``stack``,
  ``file``, ``anon``), ended by munmap, mremap, mprotect, exec or exit, or still mapped;
- ``releases``: every release of memory to the kernel (brk shrink, munmap, mremap shrink, madvise
  DONTNEED/FREE/REMOVE) with its range, bytes, time, the call, and the allocator call it happened
  inside when that is known (``malloc_trim``, ``free``...);
- ``rss``: resident memory over time; ``live``: requested bytes and blocks live over time;
- ``memory``: all of it on one time axis: heap, anonymous mappings, footprint (= heap +
  anonymous mappings), live bytes, retained (= footprint - live) and RSS.

Everything but the mapping replay is vectorized; the replay visits only the mapping calls
(mmap/munmap/mremap/mprotect), not the allocator calls that make up most large traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .addrspace import ERRNO_MAX, MAP_ANONYMOUS, AddressSpace
from .allocmodel import live_series
from .decode import RELEASE_ADVICE, advice_name
from .events import KIND_NAMES, Kind
from .tracefile import Trace

MAP_STACK = 0x20000
MAP_NORESERVE = 0x4000
_MAP_CALLS = np.array([Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MPROTECT], dtype=np.uint16)


@dataclass
class Timeline:
    pid: int
    t0: int  # ns: the start of the recording; frames carry absolute ns in ``ts``
    start_brk: int
    breaks: pd.DataFrame
    mappings: pd.DataFrame
    releases: pd.DataFrame
    rss: pd.DataFrame
    live: pd.DataFrame
    memory: pd.DataFrame
    unmatched_frees: int


def _ok(ev: np.ndarray) -> np.ndarray:
    r = ev["ret"]
    return ~((r < 0) & (r >= -ERRNO_MAX))


def _page_up(n: np.ndarray, page: int) -> np.ndarray:
    return (n.astype(np.uint64) + np.uint64(page - 1)) & ~np.uint64(page - 1)


def _what(prot: int, anon: bool, flags: int, size: int) -> str:
    if not anon:
        return "file"
    if flags & MAP_STACK:
        return "stack"
    if flags & MAP_NORESERVE:  # glibc reserves its thread-arena heaps so (64 MiB, PROT_NONE, then mprotect)
        return "heap-arena"
    return "anon"


def _segment(ev: np.ndarray) -> np.ndarray:
    """The events of the address space the timeline describes: from the last exec on."""
    ex = np.flatnonzero(ev["kind"] == Kind.EXEC)
    return ev[ex[-1] :] if len(ex) else ev


def build(trace: Trace, pid: int | None = None) -> Timeline:
    meta = trace.meta
    pid = int(meta["pid"]) if pid is None else pid
    page = int(meta.get("machine", {}).get("page_size", 4096))
    ev = _segment(trace.events[trace.events["pid"] == pid])
    kind = ev["kind"]
    snap = meta.get("snapshot") if not (kind == Kind.EXEC).any() else None
    t0 = int(meta.get("start_ns", ev["ts"][0] if len(ev) else 0))
    end_ts = int(meta.get("end_ns", ev["ts"][-1] if len(ev) else t0))

    # the break
    b = ev[kind == Kind.BRK]
    brk = b["ret"].astype(np.int64)
    ts = b["ts"].astype(np.int64)
    tid = b["tid"].astype(np.int64)
    if snap is not None:
        start_brk = int(snap["start_brk"])
        brk, ts, tid = np.concatenate([[int(snap["brk"])], brk]), np.concatenate([[t0], ts]), np.r_[0, tid]
    else:
        start_brk = int(brk[0]) if len(brk) else 0
    breaks = pd.DataFrame({"ts": ts, "brk": brk, "heap": brk - start_brk, "tid": tid})

    # mappings: replay the mapping calls, keeping every piece's lifetime
    history: list[tuple] = []
    space = AddressSpace(page, history)
    if snap is not None:
        space.now, space.reason = t0, "snapshot"
        for m in snap["mappings"]:
            anon = m["inode"] == 0 and not m["path"].startswith(("/", "[stack", "[vdso", "[vvar", "[vsyscall"))
            perms = m["perms"]
            prot = (perms[0] == "r") * 1 | (perms[1] == "w") * 2 | (perms[2] == "x") * 4
            space.mmap(m["start"], m["end"] - m["start"], prot, MAP_ANONYMOUS if anon else 0)
    calls = ev[np.isin(kind, _MAP_CALLS) & _ok(ev)]
    anon_ts: list[int] = [t0]
    anon_bytes: list[int] = [space.anon_bytes]
    for k, t, a0, a1, a2, a3, a4, ret in zip(
        calls["kind"].tolist(), calls["ts"].tolist(), calls["a0"].tolist(), calls["a1"].tolist(),
        calls["a2"].tolist(), calls["a3"].tolist(), calls["a4"].tolist(), calls["ret"].tolist(), strict=True,
    ):
        space.apply(KIND_NAMES[k], (a0, a1, a2, a3, a4, 0), ret, t)
        anon_ts.append(t)
        anon_bytes.append(space.anon_bytes)
    exits = ev[(kind == Kind.EXIT) & (ev["a2"] == 1)]
    gone = int(exits["ts"][0]) if len(exits) else None
    space.now, space.reason = (gone, "exit") if gone is not None else (end_ts, "still mapped")
    for r in space.regions:
        history.append((r.start, r.end, r.prot, r.anon, r.flags, r.born, space.now, space.reason))
    mp = pd.DataFrame(history, columns=["start", "end", "prot", "anon", "flags", "born", "died", "ended_by"])
    if len(mp):
        mp["size"] = mp["end"] - mp["start"]
        mp["what"] = [_what(p, a, f, s) for p, a, f, s in zip(mp["prot"], mp["anon"], mp["flags"], mp["size"],
                                                                  strict=True)]
    anon = pd.DataFrame({"ts": anon_ts, "anon_mapped": anon_bytes})

    releases = _releases(ev, breaks, page)
    rss_ev = ev[kind == Kind.RSS]
    if gone is not None:
        rss_ev = rss_ev[rss_ev["ts"] <= gone]
    rss = pd.DataFrame({
        "ts": rss_ev["ts"].astype(np.int64), "anon": rss_ev["a0"].astype(np.int64),
        "file": rss_ev["a1"].astype(np.int64), "shmem": rss_ev["a2"].astype(np.int64),
        "anon_high": np.maximum(rss_ev["a0"], rss_ev["a4"]).astype(np.int64),
    })
    if snap is not None:
        first = pd.DataFrame({"ts": [t0], "anon": [snap["rss"]["anon"]], "file": [snap["rss"]["file"]],
                              "shmem": [snap["rss"]["shmem"]], "anon_high": [snap["rss"]["anon"]]})
        rss = pd.concat([first, rss], ignore_index=True)
    ls = live_series(ev)
    live = pd.DataFrame({"ts": ls.ts.astype(np.int64), "live_bytes": ls.live_bytes, "live_blocks": ls.live_blocks})
    memory = _memory(breaks, anon, live, rss, t0)
    return Timeline(pid, t0, start_brk, breaks, mp, releases, rss, live, memory, ls.unmatched_frees)


def _releases(ev: np.ndarray, breaks: pd.DataFrame, page: int) -> pd.DataFrame:
    kind = ev["kind"]
    ok = _ok(ev)
    parts = []
    # brk shrinks
    prev = breaks["brk"].shift(1)
    shrink = breaks[breaks["brk"] < prev]
    parts.append(pd.DataFrame({
        "ts": shrink["ts"], "tid": shrink["tid"], "call": "brk", "advice": None, "start": shrink["brk"],
        "end": prev[shrink.index].astype(np.int64), "bytes": (prev[shrink.index] - shrink["brk"]).astype(np.int64),
    }))
    m = ev[(kind == Kind.MUNMAP) & ok]
    n = _page_up(m["a1"], page)
    parts.append(pd.DataFrame({"ts": m["ts"], "tid": m["tid"], "call": "munmap", "advice": None, "start": m["a0"],
                               "end": m["a0"] + n, "bytes": n}))
    r = ev[(kind == Kind.MREMAP) & ok]
    old, new = _page_up(r["a1"], page), _page_up(r["a2"], page)
    inplace = (r["ret"].astype(np.uint64) == r["a0"]) & (new < old)
    r, old, new = r[inplace], old[inplace], new[inplace]
    parts.append(pd.DataFrame({"ts": r["ts"], "tid": r["tid"], "call": "mremap", "advice": None,
                               "start": r["a0"] + new,
                               "end": r["a0"] + old, "bytes": old - new}))
    a = ev[(kind == Kind.MADVISE) & ok & np.isin(ev["a2"], np.array(sorted(RELEASE_ADVICE), dtype=np.uint64))]
    n = _page_up(a["a1"], page)
    parts.append(pd.DataFrame({"ts": a["ts"], "tid": a["tid"], "call": "madvise",
                               "advice": [advice_name(int(x)) for x in a["a2"]],
                               "start": a["a0"], "end": a["a0"] + n, "bytes": n}))
    parts = [p for p in parts if len(p)]
    columns = ["ts", "tid", "call", "advice", "start", "end", "bytes"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out = out.astype({"ts": np.int64, "tid": np.int64, "start": np.uint64, "end": np.uint64, "bytes": np.int64})
    out = out.sort_values("ts", kind="stable").reset_index(drop=True)
    out["inside"] = _enclosing_allocator_call(ev, out)
    return out


FREE_WINDOW_NS = 1_000_000  # a free()'s own syscalls follow its entry within this, on its thread
_CONTEXT = np.array([Kind.BRK, Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MADVISE, Kind.MPROTECT], dtype=np.uint16)


def _enclosing_allocator_call(ev: np.ndarray, rel: pd.DataFrame) -> list[str | None]:
    """For each release, the allocator call it happened in, when that is known:

    - a call with a return probe that was still running (entry <= ts <= entry + duration);
    - a free/delete (recorded at entry only) when it is the thread's very last event before the
      release, less than 1 ms before it, and, for munmap/mremap, the freed pointer lies in the
      released range. A program's own munmap or sbrk right after a free is not the free's.
    """
    calls = ev[ev["kind"] >= Kind.MALLOC]
    if not len(calls) or not len(rel):
        return [None] * len(rel)
    frame = pd.DataFrame({"call_ts": calls["ts"].astype(np.int64), "tid": calls["tid"].astype(np.int64),
                          "end": (calls["ts"] + calls["dur"]).astype(np.int64), "kind": calls["kind"]})
    probe = rel[["ts", "tid", "call", "start", "end"]].rename(columns={"end": "rel_end"}).reset_index()
    probe = probe.sort_values("ts", kind="stable")
    hit = pd.merge_asof(probe, frame.sort_values("call_ts", kind="stable"), left_on="ts", right_on="call_ts",
                        by="tid", direction="backward").sort_values("index")
    running = hit["call_ts"].notna() & (hit["end"] >= hit["ts"])
    # the thread's last event of any kind before the release (the release itself excluded)
    mine = np.isin(ev["kind"], _CONTEXT) | (ev["kind"] >= Kind.MALLOC)
    any_ev = pd.DataFrame({"prev_ts": ev["ts"][mine].astype(np.int64), "tid": ev["tid"][mine].astype(np.int64),
                           "prev_kind": ev["kind"][mine], "prev_ptr": ev["a0"][mine]})
    prev = pd.merge_asof(probe, any_ev.sort_values("prev_ts", kind="stable"), left_on="ts", right_on="prev_ts",
                         by="tid", direction="backward", allow_exact_matches=False).sort_values("index")
    soon = prev["ts"] - prev["prev_ts"] < FREE_WINDOW_NS
    direct = prev["prev_kind"].isin([int(Kind.FREE), int(Kind.DELETE)]) & soon
    ranged = prev["call"].isin(["munmap", "mremap"])
    ptr = prev["prev_ptr"].fillna(0).astype(np.uint64)
    in_range = (ptr >= prev["start"].astype(np.uint64)) & (ptr < prev["rel_end"].astype(np.uint64))
    direct &= ~ranged | in_range
    names = []
    for run, k, d, pk in zip(running.tolist(), hit["kind"].fillna(0).tolist(), direct.tolist(),
                             prev["prev_kind"].fillna(0).tolist(), strict=True):
        names.append(KIND_NAMES[int(k)] if run else KIND_NAMES[int(pk)] if d else None)
    return names


def _memory(breaks: pd.DataFrame, anon: pd.DataFrame, live: pd.DataFrame, rss: pd.DataFrame, t0: int) -> pd.DataFrame:
    """Every series on one time axis (each carried forward from its last change)."""
    ts = np.sort(np.concatenate([[t0], breaks["ts"], anon["ts"], live["ts"], rss["ts"]]).astype(np.int64))
    ts = ts[np.r_[True, ts[1:] != ts[:-1]]]  # unique, without np.unique's slow path on huge arrays
    out = pd.DataFrame({"ts": ts})
    for frame, cols in ((breaks, ["heap"]), (anon, ["anon_mapped"]), (live, ["live_bytes"]), (rss, ["anon"])):
        f = frame[["ts", *cols]].sort_values("ts", kind="stable")
        t = f["ts"].to_numpy()
        last = np.ones(len(t), dtype=bool)
        last[:-1] = t[1:] != t[:-1]
        f = f[last]  # the last value at each time
        out = pd.merge_asof(out, f.astype({"ts": np.int64}), on="ts", direction="backward")
    out = out.rename(columns={"anon": "rss_anon"}).fillna(0)
    for c in ("heap", "anon_mapped", "live_bytes", "rss_anon"):
        out[c] = out[c].astype(np.int64)
    out["footprint"] = out["heap"] + out["anon_mapped"]
    out["retained"] = out["footprint"] - out["live_bytes"]
    return out
