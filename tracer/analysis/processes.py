"""Every process a trace holds, named by the program it runs, with its parent and its own figures.

A process is named by its last exec (the kernel's comm, which the recorder puts in the EXEC
record: the file's name, at most 15 bytes); the traced process, attached to or from a trace made
before names were recorded, by its command; a process that forked and did not exec, by its
parent's name. The parent is the process whose task forked it (FORK records). Figures per process
come from its own events: allocator calls, memory calls, the highest RSS anon the kernel reported
(``kmem:rss_stat``), and when it started and ended on the trace clock.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tracer import fields as ef
from tracer.analysis.cache import cached
from tracer.decode import comm_str
from tracer.events import SYSCALL_KINDS, Kind
from tracer.tracefile import Trace


@dataclass
class Process:
    pid: int
    program: str  # what it runs ('' when not known)
    named_by: str  # "exec", "command" (the traced process's command), "parent" (forked, no exec), "unknown"
    parent: int | None  # the traced process that forked it (None for the traced one or when not seen)
    start_ns: int  # its first event
    end_ns: int  # its last event
    exited: bool  # its last task's exit was seen
    alloc_calls: int
    memory_calls: int
    rss_anon_peak: int  # bytes; 0 when no RSS sample

    @property
    def label(self) -> str:
        """How a reader names it: "pid 123 cc1" (the traced process: "pid 123 gcc, traced")."""
        return f"pid {self.pid} {self.program or '?'}" + (", traced" if self.parent is None else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def processes(trace: Trace) -> list[Process]:
    """The processes of ``trace``: the traced one first, then the others in the order they started."""
    return cached(trace, ("processes",), lambda: _processes(trace))


def _processes(trace: Trace) -> list[Process]:
    ev = trace.columns
    meta = trace.meta
    root = int(meta.get("pid") or (ev["pid"][0] if len(ev) else 0))
    kind = np.asarray(ev["kind"])
    pid = np.asarray(ev["pid"]).astype(np.int64)
    if len(pid) and (pid == pid[0]).all():  # one process: no sort of the events needed
        pids, first, inv = pid[:1], np.zeros(1, dtype=np.int64), np.zeros(len(pid), dtype=np.int64)
    else:
        pids, first, inv = np.unique(pid, return_index=True, return_inverse=True)
    order = [int(p) for p in pids[np.argsort(first, kind="stable")].tolist()]
    if root in order:
        order.remove(root)
    order.insert(0, root)

    forks = ev[(kind == int(Kind.FORK)) & ~ef.forks.thread(ev)]
    parent = {int(c): int(p) for c, p in zip(ef.forks.child(forks).tolist(), forks["pid"].tolist(), strict=True)}
    execs = ev[kind == int(Kind.EXEC)]
    named: dict[int, str] = {}
    for p, lo, hi in zip(execs["pid"].tolist(), ef.execs.comm_lo(execs).tolist(), ef.execs.comm_hi(execs).tolist(),
                         strict=True):
        named[int(p)] = comm_str(lo, hi)  # the last exec wins
    command = [str(a) for a in meta.get("command") or []]

    # each process's figures in one pass over the events (not one per process: a build has thousands)
    ts = np.asarray(ev["ts"]).astype(np.int64)
    last = (np.full(1, len(pid) - 1) if len(pids) == 1 and len(pid)
            else len(pid) - 1 - np.unique(pid[::-1], return_index=True)[1])
    n = len(pids)
    alloc = np.bincount(inv, weights=kind >= int(Kind.MALLOC), minlength=n)
    memory = np.bincount(inv, weights=np.isin(kind, [int(k) for k in SYSCALL_KINDS]), minlength=n)
    exited = np.bincount(inv, weights=(kind == int(Kind.EXIT)) & ef.exits.last_task(ev), minlength=n) > 0
    peak = np.zeros(n, dtype=np.int64)
    rss = kind == int(Kind.RSS)
    if rss.any():
        high = np.maximum(ef.rss.anon(ev[rss]), ef.rss.anon_high(ev[rss])).astype(np.int64)
        np.maximum.at(peak, inv[rss], high)
    at = {int(p): i for i, p in enumerate(pids.tolist())}

    out: list[Process] = []
    names: dict[int, str] = {}
    for p in order:
        if named.get(p):
            program, how = named[p], "exec"
        elif p == root and command:
            program, how = os.path.basename(command[0]), "command"
        elif parent.get(p) in names and names[parent[p]]:
            program, how = names[parent[p]], "parent"
        else:
            program, how = "", "unknown"
        names[p] = program
        i = at.get(p)
        start = int(meta.get("start_ns", 0))
        out.append(Process(
            pid=p, program=program, named_by=how, parent=None if p == root else parent.get(p),
            start_ns=int(ts[first[i]]) if i is not None else start, end_ns=int(ts[last[i]]) if i is not None else start,
            exited=bool(exited[i]) if i is not None else False, alloc_calls=int(alloc[i]) if i is not None else 0,
            memory_calls=int(memory[i]) if i is not None else 0, rss_anon_peak=int(peak[i]) if i is not None else 0))
    return out
