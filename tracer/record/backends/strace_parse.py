"""Streaming parser for ``strace -f -X raw`` text (see :func:`strace_args`): lines in, events out.

A line is an optional ``PID`` prefix, a ``seconds.fraction`` wall-clock timestamp and one of: a whole
call ``mmap(NULL, 8192, 0x3, 0x22, -1, 0) = 0x7f.. <0.000012>`` (``-T`` duration last); a call split
in two because another task reported in between, ``mmap(... <unfinished ...>`` then, from the same
task, ``<... mmap resumed>) = 0x7f.. <..>`` (one event, at the entry time); ``+++ exited with 3 +++``
or ``+++ killed by SIGKILL (core dumped) +++``, printed for every *task*, so whether the process
ended comes from the thread groups; ``+++ superseded by execve in pid N +++`` when a non-leader
thread N calls execve (the call resumes under the leader's pid); ``--- SIG... ---``, ignored.

A split call completes after calls that started later, and a new task's first lines may precede its
parent's ``<... clone resumed>``. Completed events are therefore held until every call still open
started later, then released in timestamp order; pids (thread group ids) and process ends are
resolved at release, once the parent's clone has been seen.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tracer import decode
from tracer.events import EVENT_DTYPE, SYSCALL_KINDS, Kind, from_rows

MASK64 = 0xFFFF_FFFF_FFFF_FFFF

_HEAD = re.compile(r"(?:(\d+)\s+)?(\d+)\.(\d+)\s+(.*)$")
_CALL = re.compile(r"([a-z_][a-z0-9_]*)\((.*)$")
_RESUMED = re.compile(r"<\.\.\. ([a-z_][a-z0-9_]*) resumed>(.*)$")
_TAIL = re.compile(
    r"\)\s+= (?:(?P<ret>-?\d+|0x[0-9a-fA-F]+)|\?)"
    r"(?: (?P<err>E[A-Z0-9_]+) \((?P<msg>[^()]*)\))?"
    r"(?: <unavailable>)?"
    r"(?: <(?P<dur>\d+(?:\.\d+)?)>)?$"
)
_PID_CHANGED = re.compile(r" <pid changed to (\d+) \.\.\.>$")
_EXITED = re.compile(r"\+\+\+ exited with (-?\d+) \+\+\+$")
_KILLED = re.compile(r"\+\+\+ killed by (\S+)( \(core dumped\))? \+\+\+$")
_SUPERSEDED = re.compile(r"\+\+\+ superseded by execve in pid (\d+) \+\+\+$")
_FLAGS = re.compile(r"flags=([0-9a-fA-Fx|]+)")

UNFINISHED = " <unfinished ...>"
DETACHED = " <detached ...>"

MEMORY_CALLS: dict[str, Kind] = {k.name.lower(): k for k in SYSCALL_KINDS}
_NARGS: dict[Kind, tuple[int, ...]] = {Kind.BRK: (1,), Kind.MMAP: (6,), Kind.MUNMAP: (2,)}
_NARGS |= {Kind.MREMAP: (4, 5), Kind.MADVISE: (3,), Kind.MPROTECT: (3,)}
FORK_CALLS = frozenset({"clone", "clone3", "fork", "vfork"})
EXEC_CALLS = frozenset({"execve", "execveat"})
_EXEC_PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')  # the first string argument of execve/execveat
EXIT_CALLS = frozenset({"exit", "exit_group"})

TRACED_SYSCALLS = ",".join([*MEMORY_CALLS, "clone,clone3,fork,vfork,execve,execveat,exit,exit_group"])
#: Signals never fatal by default; every other one is printed, as "+++ killed by SIG +++" needs it.
QUIET_SIGNALS = "!SIGCHLD,SIGURG,SIGWINCH,SIGCONT"


def strace_args(
    output: str, *, follow: bool, seccomp: bool, ns_precision: bool = True, exit_hold_us: int = 0
) -> list[str]:
    """strace options (all but the target) whose output this parser reads.

    ``exit_hold_us`` > 0 makes strace hold each ``exit_group`` that long before the kernel runs it
    (``-e inject=exit_group:delay_enter=``): strace prints the call's entry first, so whoever reads
    the output can still sample the process's memory before its address space is torn down.
    """
    args = ["-f"] if follow else []
    if ns_precision:
        args += ["--absolute-timestamps=format:unix,precision:ns", "--syscall-times=ns"]
    else:
        args += ["-ttt", "-T"]
    args += ["-X", "raw", "-q"]
    if seccomp:
        args.append("--seccomp-bpf")
    args += ["-e", f"trace={TRACED_SYSCALLS}", "-e", f"signal={QUIET_SIGNALS}"]
    if exit_hold_us > 0:
        args += ["-e", f"inject=exit_group:delay_enter={int(exit_hold_us)}"]
    return [*args, "-o", output]


def parse_seconds(whole: str, frac: str) -> int:
    """``"1795679238", "780069465"`` -> ns (any number of fraction digits)."""
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def _num(text: str) -> int:
    text = text.strip()
    if text == "NULL":
        return 0
    if text.startswith(("0x", "-0x")):
        return int(text, 16)
    return int(text, 10)


@dataclass(slots=True)
class _Open:
    """A call whose line ended in ``<unfinished ...>``."""

    name: str
    ts: int
    seq: int
    args: str
    line: str
    old_tid: int = 0  # execve in a non-leader thread: the tid that called it


@dataclass(order=True, slots=True)
class _Held:
    ts: int
    seq: int
    tid: int = field(compare=False)
    kind: int = field(compare=False)
    args: tuple[int, ...] = field(compare=False)
    ret: int = field(compare=False, default=0)
    dur: int = field(compare=False, default=0)


class StraceParser:
    """Feed it strace's lines in order; :meth:`take` returns the events completed so far.

    ``clock_offset_ns`` is CLOCK_REALTIME - CLOCK_MONOTONIC: strace stamps lines with the wall clock
    and events use the monotonic one. ``default_tid`` is used for lines without a pid prefix (strace
    omits it when it traces a single task without ``-f``). ``tgid_of`` may resolve the process of a
    task the trace never introduced (attach mode: threads that existed before strace). With
    ``track_children=False`` the children named by FORK events are not expected to report (strace ran
    without ``-f``). A call left open for longer than ``hold_ns`` of trace time stops holding back
    the others (they are then released slightly out of order).

    Nothing is dropped silently: lines it does not understand are counted in ``unparsed`` (the first
    ones kept in ``unparsed_lines``); calls whose result strace never reported (the task died or was
    detached mid-call, the call was restarted) are counted in ``incomplete``.
    """

    def __init__(
        self,
        clock_offset_ns: int = 0,
        *,
        default_tid: int = 0,
        tgid_of: Callable[[int], int | None] | None = None,
        track_children: bool = True,
        hold_ns: int = 2_000_000_000,
        keep_lines: int = 10,
    ) -> None:
        self.clock_offset_ns = clock_offset_ns
        self.default_tid = default_tid
        self.tgid_of = tgid_of
        self.track_children = track_children
        self.hold_ns = hold_ns
        self.keep_lines = keep_lines
        self.lines = 0
        self.unparsed = 0
        self.unparsed_lines: list[str] = []
        self.incomplete = 0
        self.incomplete_lines: list[str] = []
        self._seq = 0
        self._last_ts = 0
        self._open: dict[int, _Open] = {}
        self._held: list[_Held] = []
        self._rows: list[tuple[int, ...]] = []
        self._tgid: dict[int, int] = {}
        self._groups: dict[int, set[int]] = {}
        #: Processes whose last task has ended, in released events.
        self.ended: set[int] = set()

    # --- public -------------------------------------------------------------------------------------

    def add_task(self, tid: int, tgid: int) -> None:
        """Declare a task that exists already (attach mode), so its events get the right pid."""
        self._tgid[tid] = tgid
        self._groups.setdefault(tgid, set()).add(tid)

    def live_processes(self) -> list[int]:
        """Processes (thread group ids) that have started and not ended, as far as released events tell."""
        return sorted(self._groups)

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def feed(self, line: str) -> None:
        """Parse one line (with or without its newline)."""
        self.lines += 1
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        head = _HEAD.match(line)
        if head is None:
            self._unparsed(line)
            return
        tid = int(head[1]) if head[1] else self.default_tid
        ts = max(0, parse_seconds(head[2], head[3]) - self.clock_offset_ns)
        self._last_ts = max(self._last_ts, ts)
        rest = head[4]
        seq = self._seq
        self._seq += 1
        if rest.startswith("+++ "):
            self._status_line(tid, ts, seq, rest, line)
        elif rest.startswith("--- "):
            return
        elif rest.startswith("<... "):
            self._resumed(tid, rest, line)
        else:
            self._call(tid, ts, seq, rest, line)

    def advance(self) -> None:
        """Release the events no open call can precede any more (take() does this too)."""
        self._release(self._watermark())

    def take(self) -> np.ndarray:
        """Events released so far (in timestamp order), removed from the parser."""
        self.advance()
        return self._drain()

    def flush(self) -> np.ndarray:
        """End of the trace: release everything; calls still open count as incomplete."""
        for pending in self._open.values():
            if pending.name not in EXIT_CALLS:
                self._incomplete(pending.line)
        self._open.clear()
        self._release(None)
        return self._drain()

    # --- line kinds ---------------------------------------------------------------------------------

    def _call(self, tid: int, ts: int, seq: int, rest: str, line: str) -> None:
        m = _CALL.match(rest)
        if m is None:
            self._unparsed(line)
            return
        name, body = m[1], m[2]
        if body.endswith(UNFINISHED):
            self._open_call(tid, _Open(name, ts, seq, body[: -len(UNFINISHED)], line))
            return
        changed = _PID_CHANGED.search(body)
        if changed is not None:
            self._open_call(int(changed[1]), _Open(name, ts, seq, body[: changed.start()], line, old_tid=tid))
            return
        if body.endswith(DETACHED):
            self._incomplete(line)
            return
        self._complete(name, tid, ts, seq, body, line, 0)

    def _resumed(self, tid: int, rest: str, line: str) -> None:
        m = _RESUMED.match(rest)
        if m is None:
            self._unparsed(line)
            return
        name, body = m[1], m[2]
        pending = self._open.pop(tid, None)
        if pending is None or pending.name != name:
            if pending is not None:
                self._open[tid] = pending
            if name not in EXIT_CALLS:
                self._incomplete(line)  # the call started before strace attached
            return
        if body.endswith(UNFINISHED):
            pending.args += body[: -len(UNFINISHED)]
            self._open[tid] = pending
            return
        if body.endswith(DETACHED):
            self._incomplete(pending.line)
            return
        self._complete(name, tid, pending.ts, pending.seq, pending.args + body, line, pending.old_tid)

    def _status_line(self, tid: int, ts: int, seq: int, rest: str, line: str) -> None:
        exited = _EXITED.match(rest)
        killed = _KILLED.match(rest) if exited is None else None
        if exited is not None or killed is not None:
            self._drop_open(tid)
            if exited is not None:
                self._hold(_Held(ts, seq, tid, Kind.EXIT, (int(exited[1]) & 0xFF, 1)))
            else:
                try:
                    sig = decode.signal_value(killed[1])
                except ValueError:
                    sig = 0
                self._hold(_Held(ts, seq, tid, Kind.EXIT, (0, 0, 0, sig)))
            return
        superseded = _SUPERSEDED.match(rest)
        if superseded is None:
            self._unparsed(line)
            return
        old_tid = int(superseded[1])
        self._drop_open(tid)  # whatever the leader was doing is gone
        pending = self._open.pop(old_tid, None)
        if pending is None or pending.name not in EXEC_CALLS:
            pending = _Open("execve", ts, seq, "", line)
        pending.old_tid = old_tid
        self._open[tid] = pending

    # --- completing calls ---------------------------------------------------------------------------

    def _complete(self, name: str, tid: int, ts: int, seq: int, body: str, line: str, old_tid: int) -> None:
        tail = _TAIL.search(body)
        if tail is None:
            self._unparsed(line)
            return
        if tail["ret"] is None:  # "= ?": the task died, or the call restarts
            if name not in EXIT_CALLS:
                self._incomplete(line)
            return
        args = body[: tail.start()]
        try:
            ret = _num(tail["ret"])
            if tail["err"]:
                ret = -decode.errno_value(tail["err"])
        except ValueError:
            self._unparsed(line)
            return
        dur = parse_seconds(*(tail["dur"] + ".0").split(".")[:2]) if tail["dur"] else 0
        kind = MEMORY_CALLS.get(name)
        if kind is not None:
            parts = args.split(", ") if args else []
            if len(parts) not in _NARGS[kind]:
                self._unparsed(line)
                return
            try:
                values = tuple(_num(p) & MASK64 for p in parts)
            except ValueError:
                self._unparsed(line)
                return
            self._hold(_Held(ts, seq, tid, kind, values, ret, dur))
        elif name in FORK_CALLS:
            if ret <= 0:
                return  # failed: no child
            flags = self._clone_flags(name, args)
            if flags is None:
                self._unparsed(line)
                return
            thread = 1 if flags & decode.CLONE_THREAD else 0
            self._hold(_Held(ts, seq, tid, Kind.FORK, (ret, flags, thread), ret, dur))
        elif name in EXEC_CALLS:
            if ret < 0:
                return  # failed: the image did not change
            path = _EXEC_PATH.search(args)  # the file run: the kernel names the program after it
            name = path[1].rsplit("/", 1)[-1] if path else ""
            self._hold(_Held(ts, seq, tid, Kind.EXEC, (old_tid or tid, *decode.comm_words(name)), 0, dur))
        elif name not in EXIT_CALLS:
            self._unparsed(line)

    @staticmethod
    def _clone_flags(name: str, args: str) -> int | None:
        """Clone flags without the exit signal byte (fork: 0, vfork: CLONE_VM|CLONE_VFORK)."""
        if name == "fork":
            return 0
        if name == "vfork":
            return decode.CLONE_VM | decode.CLONE_VFORK
        m = _FLAGS.search(args)
        if m is None:
            return None
        try:
            value = sum(_num(p) for p in m[1].split("|"))
        except ValueError:
            return None
        return value & ~decode.CSIGNAL & MASK64

    # --- bookkeeping --------------------------------------------------------------------------------

    def _open_call(self, tid: int, call: _Open) -> None:
        self._drop_open(tid)
        self._open[tid] = call

    def _drop_open(self, tid: int) -> None:
        pending = self._open.pop(tid, None)
        if pending is not None and pending.name not in EXIT_CALLS:
            self._incomplete(pending.line)

    def _hold(self, item: _Held) -> None:
        heapq.heappush(self._held, item)

    def _unparsed(self, line: str) -> None:
        self.unparsed += 1
        if len(self.unparsed_lines) < self.keep_lines:
            self.unparsed_lines.append(line)

    def _incomplete(self, line: str) -> None:
        self.incomplete += 1
        if len(self.incomplete_lines) < self.keep_lines:
            self.incomplete_lines.append(line)

    def _watermark(self) -> tuple[int, int] | None:
        """Events before this (ts, seq) can no longer be preceded by one still to complete."""
        horizon = self._last_ts - self.hold_ns
        marks = [(c.ts, c.seq) for c in self._open.values() if c.ts >= horizon]
        return min(marks) if marks else None

    def _release(self, mark: tuple[int, int] | None) -> None:
        held = self._held
        while held and (mark is None or (held[0].ts, held[0].seq) < mark):
            self._rows.append(self._resolve(heapq.heappop(held)))

    def _drain(self) -> np.ndarray:
        rows, self._rows = self._rows, []
        return from_rows(rows) if rows else np.zeros(0, dtype=EVENT_DTYPE)

    def _pid(self, tid: int) -> int:
        tgid = self._tgid.get(tid)
        if tgid is None:
            tgid = self.tgid_of(tid) if self.tgid_of is not None else None
            tgid = tid if tgid is None else tgid
            self.add_task(tid, tgid)
        return tgid

    def _resolve(self, h: _Held) -> tuple[int, ...]:
        """Apply one event to the task/process state (in timestamp order) and build its row."""
        a = list(h.args) + [0] * (6 - len(h.args))
        pid = self._pid(h.tid)
        tid = h.tid
        if h.kind == Kind.FORK:
            if self.track_children:  # without -f strace follows neither threads nor processes
                self.add_task(a[0], pid if a[2] else a[0])
        elif h.kind == Kind.EXEC:
            tid = pid  # after execve the task runs as the thread group leader
            self._groups[pid] = {pid}
            self._tgid[pid] = pid
        elif h.kind == Kind.EXIT:
            group = self._groups.get(pid)
            if group is not None:
                group.discard(h.tid)
            last = not group
            if last:
                self._groups.pop(pid, None)
                self.ended.add(pid)
            a[2] = 1 if last else 0
        return (h.ts, h.dur, pid, tid, int(h.kind), 0, 0, *a, h.ret)
