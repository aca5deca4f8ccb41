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

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tracer import fields as ef
from tracer.analysis.addrspace import AddressSpace
from tracer.analysis.allocmodel import process_live, since_last_exec
from tracer.analysis.cache import cached
from tracer.columns import Events
from tracer.decode import MAP_ANONYMOUS, MAP_NORESERVE, MAP_STACK, RELEASE_ADVICE, advice_name
from tracer.events import KIND_NAMES, Kind
from tracer.tracefile import Trace

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
    anon: pd.DataFrame  # ts, anon_mapped: the anonymous mappings' bytes after each mapping call
    unmatched_frees: int
    page_size: int = 4096
    _memory_frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def memory(self) -> pd.DataFrame:
        """Every series on one time axis (a row per time any of them changes), made when first
        asked for: a summary needs none of it, a drawing all (7 columns of every allocator call)."""
        if self._memory_frame is None:
            self._memory_frame = _memory(self.breaks, self.anon, self.live, self.rss, self.t0)
        return self._memory_frame

    def at(self, t: int) -> dict[str, int]:
        """The :attr:`memory` row at time ``t`` (each series' last value at or before it), without
        building the frame."""
        return {k: int(v[0]) for k, v in self.series_at(np.array([t], dtype=np.int64)).items()}

    def series_at(self, ts: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`at` of each of the moments ``ts`` at once: name -> values."""
        out = {}
        for frame, col, name in _series(self.breaks, self.anon, self.live, self.rss):
            t, v = _in_time_order(frame["ts"].to_numpy(np.int64), frame[col].to_numpy(np.int64))
            j = np.searchsorted(t, ts, side="right") - 1
            out[name] = np.where(j >= 0, v[np.maximum(j, 0)], 0) if len(t) else np.zeros(len(ts), dtype=np.int64)
        out["footprint"] = out["heap"] + out["anon_mapped"]
        out["retained"] = out["footprint"] - out["live_bytes"]
        return out


def _what(prot: int, anon: bool, flags: int, size: int) -> str:
    if not anon:
        return "file"
    if flags & MAP_STACK:
        return "stack"
    if flags & MAP_NORESERVE:  # glibc reserves its thread-arena heaps so (64 MiB, PROT_NONE, then mprotect)
        return "heap-arena"
    return "anon"


def build(trace: Trace, pid: int | None = None) -> Timeline:
    """The timeline of process ``pid`` (the traced one by default), built once per read trace:
    the findings, the summary and the report all ask for it (pandas copies on write, so what one
    of them derives from its frames never changes them)."""
    pid = int(trace.meta["pid"]) if pid is None else pid
    key = ("timeline", pid)
    return cached(trace, key, lambda: _build(trace, pid))


def _build(trace: Trace, pid: int) -> Timeline:
    meta = trace.meta
    page = int(meta.get("machine", {}).get("page_size", 4096))
    ev, kind, snap = own_events(trace, pid)
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
        map_snapshot(space, snap)
    anon_ts: list[int] = [t0]
    anon_bytes: list[int] = [space.anon_bytes]
    for t in replay_mappings(ev, kind, space):
        anon_ts.append(t)
        anon_bytes.append(space.anon_bytes)
    exits = ev[kind == Kind.EXIT]
    exits = exits[ef.exits.last_task(exits)]
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

    releases = _releases(ev, kind, breaks, page)
    rss_ev = ev[kind == Kind.RSS]
    if gone is not None:
        rss_ev = rss_ev[rss_ev["ts"] <= gone]
    rss = pd.DataFrame({
        "ts": rss_ev["ts"].astype(np.int64), "anon": ef.rss.anon(rss_ev).astype(np.int64),
        "file": ef.rss.file(rss_ev).astype(np.int64), "shmem": ef.rss.shmem(rss_ev).astype(np.int64),
        "anon_high": np.maximum(ef.rss.anon(rss_ev), ef.rss.anon_high(rss_ev)).astype(np.int64),
    })
    if snap is not None:
        first = pd.DataFrame({"ts": [t0], "anon": [snap["rss"]["anon"]], "file": [snap["rss"]["file"]],
                              "shmem": [snap["rss"]["shmem"]], "anon_high": [snap["rss"]["anon"]]})
        rss = pd.concat([first, rss], ignore_index=True)
    ls = process_live(trace, pid)
    live = pd.DataFrame({"ts": ls.ts.view(np.int64), "live_bytes": ls.live_bytes, "live_blocks": ls.live_blocks},
                        copy=False)  # no 2-D block: pandas would copy every column into one
    return Timeline(pid, t0, start_brk, breaks, mp, releases, rss, live, anon, ls.unmatched_frees, page)


def own_events(trace: Trace, pid: int) -> tuple[Events, np.ndarray, dict | None]:
    """``pid``'s events from its last exec on, their kinds, and the attach snapshot that starts
    them when ``pid`` is the attached process and has not exec'd since."""
    ev = since_last_exec(trace.columns.where(trace.columns["pid"] == pid))
    kind = np.ascontiguousarray(ev["kind"])
    attached = pid == int(trace.meta.get("pid", -1)) and not (kind == int(Kind.EXEC)).any()
    return ev, kind, trace.meta.get("snapshot") if attached else None


def map_snapshot(space: AddressSpace, snap: dict) -> None:
    """The mappings the attach snapshot saw, put into ``space``."""
    for m in snap["mappings"]:
        anon = m["inode"] == 0 and not m["path"].startswith(("/", "[stack", "[vdso", "[vvar", "[vsyscall"))
        perms = m["perms"]
        prot = (perms[0] == "r") * 1 | (perms[1] == "w") * 2 | (perms[2] == "x") * 4
        space.mmap(m["start"], m["end"] - m["start"], prot, MAP_ANONYMOUS if anon else 0)


def replay_mappings(ev: Events, kind: np.ndarray, space: AddressSpace) -> Iterator[int]:
    """Apply the successful mapping calls of ``ev`` to ``space``, yielding each one's time after it."""
    calls = ev[np.isin(kind, _MAP_CALLS)]
    calls = calls[ef.ok(calls)]
    for k, t, ret, *args in zip(calls["kind"].tolist(), calls["ts"].tolist(), calls["ret"].tolist(),
                                *ef.arguments(calls, 5), strict=True):
        space.apply(KIND_NAMES[k], (*args, 0), ret, t)
        yield t


@dataclass
class ExitState:
    """A process's memory when its last task exited: what its timeline's memory holds then."""

    ts: int  # the exit
    footprint: int  # heap (the break above its start) plus anonymous mappings
    rss_anon: int  # the last resident-memory sample before the exit
    exit_code: int | None


def state_at_exit(trace: Trace, pid: int) -> ExitState | None:
    """:class:`ExitState` of ``pid``: what its :func:`build` timeline gives at its exit, without
    building it (a shell or a build forks hundreds of processes). None if it did not exit while
    traced."""
    ev, kind, snap = own_events(trace, pid)
    ex = np.flatnonzero((kind == int(Kind.EXIT)) & ef.exits.last_task(ev))
    if not len(ex):
        return None
    t = int(ev["ts"][ex[0]])
    upto = int(np.searchsorted(ev["ts"], t, side="right"))  # what happened by then
    ev, kind, end = ev[:upto], kind[:upto], int(ex[0])
    brk = ev["ret"][kind == int(Kind.BRK)].astype(np.int64)
    space = AddressSpace(int(trace.meta.get("machine", {}).get("page_size", 4096)))
    rss = ef.rss.anon(ev)[kind == int(Kind.RSS)].astype(np.int64)
    if snap is not None:
        map_snapshot(space, snap)
        brk = np.r_[int(snap["brk"]), brk] - int(snap["start_brk"])
        rss = np.r_[int(snap["rss"]["anon"]), rss]
    else:
        brk = brk - brk[0] if len(brk) else brk
    for _ in replay_mappings(ev, kind, space):
        pass
    heap = int(brk[-1]) if len(brk) else 0
    return ExitState(t, heap + space.anon_bytes, int(rss[-1]) if len(rss) else 0, ef.exits.code_at(ev, end))


def _releases(ev: Events, kind: np.ndarray, breaks: pd.DataFrame, page: int) -> pd.DataFrame:
    """Every release of memory to the kernel, in time order: brk shrinks, munmaps, mremaps that
    shrink in place, madvises that free pages (arrays gathered first: one frame, not one per call)."""
    parts: list[tuple] = []

    def add(ts: np.ndarray, tid: np.ndarray, call: str, advice: list | None, start: np.ndarray,
            end: np.ndarray, nbytes: np.ndarray) -> None:
        if len(ts):
            parts.append((ts, tid, [call] * len(ts), advice or [None] * len(ts), start, end, nbytes))

    b = breaks["brk"].to_numpy(np.int64)
    shrink = np.flatnonzero(b[1:] < b[:-1]) + 1
    add(breaks["ts"].to_numpy(np.int64)[shrink], breaks["tid"].to_numpy(np.int64)[shrink], "brk", None, b[shrink],
        b[shrink - 1], b[shrink - 1] - b[shrink])
    m = ev[kind == Kind.MUNMAP]
    m = m[ef.ok(m)]
    n = ef.page_up(ef.munmap.length(m), page)
    add(m["ts"], m["tid"], "munmap", None, ef.munmap.addr(m), ef.munmap.addr(m) + n, n)
    r = ev[kind == Kind.MREMAP]
    r = r[ef.ok(r)]
    old, new = ef.page_up(ef.mremap.old_length(r), page), ef.page_up(ef.mremap.new_length(r), page)
    inplace = (ef.mremap.result(r).astype(np.uint64) == ef.mremap.old_addr(r)) & (new < old)
    r, old, new = r[inplace], old[inplace], new[inplace]
    add(r["ts"], r["tid"], "mremap", None, ef.mremap.old_addr(r) + new, ef.mremap.old_addr(r) + old, old - new)
    a = ev[kind == Kind.MADVISE]
    a = a[ef.ok(a) & np.isin(ef.madvise.advice(a), np.array(sorted(RELEASE_ADVICE), dtype=np.uint64))]
    n = ef.page_up(ef.madvise.length(a), page)
    add(a["ts"], a["tid"], "madvise", [advice_name(int(x)) for x in ef.madvise.advice(a)], ef.madvise.addr(a),
        ef.madvise.addr(a) + n, n)
    names = ("ts", "tid", "call", "advice", "start", "end", "bytes")
    types = (np.int64, np.int64, object, object, np.uint64, np.uint64, np.int64)
    cols = {name: np.concatenate([np.asarray(p[i], dtype=t) for p in parts]) if parts else np.empty(0, dtype=t)
            for i, (name, t) in enumerate(zip(names, types, strict=True))}
    order = np.argsort(cols["ts"], kind="stable")
    out = pd.DataFrame({name: col[order] for name, col in cols.items()}, copy=False)
    out["inside"] = _enclosing_allocator_call(ev, out)
    return out


FREE_WINDOW_NS = 1_000_000  # a free()'s own syscalls follow its entry within this, on its thread
_CONTEXT = np.array([Kind.BRK, Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MADVISE, Kind.MPROTECT], dtype=np.uint16)


STEPS_BACK = 64  # candidates of other threads stepped over per query before grouping by thread


def _last_before(ev: Events, cand: np.ndarray, q_ts: np.ndarray, q_tid: np.ndarray, strict: bool) -> np.ndarray:
    """For each query (time, thread): the index in ``ev`` of the thread's last event among the ``cand``
    indices (ascending) at or before that time (strictly before when ``strict``), or -1. ``ev`` is in
    time order: each query starts at the last candidate of any thread then and steps back over
    other threads' (a few at most, as a rule); the queries still open then are found by thread."""
    out = np.full(len(q_ts), -1, dtype=np.int64)
    if not len(cand) or not len(q_ts):
        return out
    ev_ts, ev_tid = ev["ts"], ev["tid"]
    q = np.asarray(q_ts, dtype=np.int64)
    at = np.searchsorted(ev_ts, np.maximum(q, 0).astype(ev_ts.dtype), side="left" if strict else "right") - 1
    at[q < 0] = -1  # (times are not negative)
    k = np.searchsorted(cand, at, side="right") - 1
    pending = np.flatnonzero(k >= 0)
    for _ in range(STEPS_BACK):
        if not len(pending):
            return out
        same = ev_tid[cand[k[pending]]] == q_tid[pending]
        out[pending[same]] = cand[k[pending[same]]]
        pending = pending[~same]
        k[pending] -= 1
        pending = pending[k[pending] >= 0]
    if len(pending):
        out[pending] = _by_thread(ev, cand, q_ts[pending], q_tid[pending], strict)
    return out


def _by_thread(ev: Events, cand: np.ndarray, q_ts: np.ndarray, q_tid: np.ndarray, strict: bool) -> np.ndarray:
    """:func:`_last_before`, by grouping the candidates by thread."""
    out = np.full(len(q_ts), -1, dtype=np.int64)
    ts, tid = ev["ts"][cand].astype(np.int64), ev["tid"][cand]
    threads = np.unique(q_tid)
    if len(threads) > 8:  # many threads: group the candidates by thread once
        order = np.argsort(tid, kind="stable")
        cand, ts, tid = cand[order], ts[order], tid[order]
        bounds = np.searchsorted(tid, threads, side="left"), np.searchsorted(tid, threads, side="right")
        groups = (np.arange(lo, hi) for lo, hi in zip(*bounds, strict=True))
    else:
        groups = (np.flatnonzero(tid == t) for t in threads)
    side = "left" if strict else "right"
    for t, g in zip(threads.tolist(), groups, strict=True):
        if not len(g):
            continue
        q = np.flatnonzero(q_tid == t)
        j = np.searchsorted(ts[g], q_ts[q], side=side) - 1
        out[q] = np.where(j >= 0, cand[g][np.maximum(j, 0)], -1)
    return out


def _enclosing_allocator_call(ev: Events, rel: pd.DataFrame) -> list[str | None]:
    """For each release, the allocator call it happened in, when that is known:

    - a call with a return probe that was still running (entry <= ts <= entry + duration);
    - a free/delete (recorded at entry only) when it is the thread's very last event before the
      release, less than 1 ms before it, and, for munmap/mremap, the freed pointer lies in the
      released range. A program's own munmap or sbrk right after a free is not the free's.
    """
    kind = np.ascontiguousarray(ev["kind"])
    calls = np.flatnonzero(kind >= Kind.MALLOC)
    if not len(calls) or not len(rel):
        return [None] * len(rel)
    q_ts, q_tid = rel["ts"].to_numpy(np.int64), rel["tid"].to_numpy(np.int64)
    hit = _last_before(ev, calls, q_ts, q_tid, strict=False)
    # the thread's last event of any kind before the release (the release itself excluded)
    prev = _last_before(ev, np.flatnonzero(np.isin(kind, _CONTEXT) | (kind >= Kind.MALLOC)), q_ts, q_tid, strict=True)
    h, p = ev[np.maximum(hit, 0)], ev[np.maximum(prev, 0)]
    running = (hit >= 0) & ((h["ts"] + h["dur"]).astype(np.int64) >= q_ts)
    soon = q_ts - p["ts"].astype(np.int64) < FREE_WINDOW_NS
    direct = (prev >= 0) & np.isin(p["kind"], [Kind.FREE, Kind.DELETE]) & soon
    ranged = rel["call"].isin(["munmap", "mremap"]).to_numpy()
    ptr = ef.free.ptr(p)
    in_range = (ptr >= rel["start"].to_numpy(np.uint64)) & (ptr < rel["end"].to_numpy(np.uint64))
    direct &= ~ranged | in_range
    return [KIND_NAMES[int(hk)] if run else KIND_NAMES[int(pk)] if d else None
            for run, hk, d, pk in zip(running.tolist(), h["kind"].tolist(), direct.tolist(), p["kind"].tolist(),
                                      strict=True)]


def _merge_times(parts: list[np.ndarray]) -> np.ndarray:
    """The distinct times of several arrays, ascending; linear in the largest when it is sorted already."""
    parts = [p if len(p) < 2 or bool((p[1:] >= p[:-1]).all()) else np.sort(p) for p in parts]
    parts.sort(key=len)
    big, rest = parts[-1], np.sort(np.concatenate(parts[:-1]))
    ts = np.insert(big, np.searchsorted(big, rest, side="right"), rest)
    return ts[np.r_[True, ts[1:] != ts[:-1]]] if len(ts) else ts


def _in_time_order(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(t) < 2 or bool((t[1:] >= t[:-1]).all()):
        return t, v
    order = np.argsort(t, kind="stable")
    return t[order], v[order]


def _series(breaks: pd.DataFrame, anon: pd.DataFrame, live: pd.DataFrame,
            rss: pd.DataFrame) -> tuple[tuple[pd.DataFrame, str, str], ...]:
    """(frame, its column, the name in :attr:`Timeline.memory`) of each series of the memory frame."""
    return ((breaks, "heap", "heap"), (anon, "anon_mapped", "anon_mapped"), (live, "live_bytes", "live_bytes"),
            (rss, "anon", "rss_anon"))


def _memory(breaks: pd.DataFrame, anon: pd.DataFrame, live: pd.DataFrame, rss: pd.DataFrame, t0: int) -> pd.DataFrame:
    """Every series on one time axis (each carried forward from its last change; 0 before its first)."""
    series = _series(breaks, anon, live, rss)
    ts = _merge_times([np.array([t0], dtype=np.int64), *(f["ts"].to_numpy(np.int64) for f, _, _ in series)])
    out = {"ts": ts}
    for frame, col, name in series:
        t, v = frame["ts"].to_numpy(np.int64), frame[col].to_numpy(np.int64)
        t, v = _in_time_order(t, v)
        j = np.searchsorted(t, ts, side="right") - 1  # the last value at or before each time
        out[name] = np.where(j >= 0, v[np.maximum(j, 0)], 0) if len(t) else np.zeros(len(ts), dtype=np.int64)
    out["footprint"] = out["heap"] + out["anon_mapped"]
    out["retained"] = out["footprint"] - out["live_bytes"]
    return pd.DataFrame(out, copy=False)  # the columns as they are (no copy into one 2-D block)
