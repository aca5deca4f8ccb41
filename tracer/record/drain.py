"""The drain: events move from the backend's rings to the trace file while the target runs.

:class:`Drain` polls the backend, gathers what it gives into batches written at most ``FLUSH_S``
apart (or as soon as ``FLUSH_EVENTS`` are waiting), feeds the status line, notices the traced
process's last task exiting and finds the C library the target maps. :class:`StopRule` says when
the recording ends: the launched command exited, the attached process is gone, ``--duration``
passed, or the user interrupted. The session (``session.py``) starts and finishes around them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tracer import fields as ef
from tracer.columns import Columns
from tracer.events import Kind
from tracer.record import procfs, sysinfo
from tracer.record.backends.base import Backend
from tracer.record.status import StatusLine
from tracer.tracefile import TraceWriter

POLL_S = 0.05
FLUSH_S = 1.0  # a SIGKILLed recorder loses at most this much
FLUSH_EVENTS = 1 << 13  # a poll this large goes to disk as it is (no copy into a larger batch)
GRACE_AFTER_INTERRUPT_S = 2.0
LIBC_TRIES = 40  # polls (2 s) spent looking for the target's C library in /proc/PID/maps


class Drain:
    """Backend -> trace file, one poll at a time."""

    def __init__(self, backend: Backend, writer: TraceWriter, pid: int, status: StatusLine) -> None:
        self.backend, self.writer, self.pid, self.status = backend, writer, pid, status
        self.pending: list[Columns] = []
        self.pending_n = 0
        self.last_flush = time.monotonic()
        self.libc: str | None = None
        self._libc_tries = LIBC_TRIES
        self.root_gone = False  # the traced process's last task exited

    def poll(self) -> None:
        """Take what the backend has, write it out when a flush is due, redraw the status line."""
        ev = self.backend.poll()
        if len(ev):
            self.pending.append(ev)
            self.pending_n += len(ev)
            self.status.feed(ev)
            self.root_gone = self.root_gone or root_exited(ev, self.pid)
        if self.libc is None and self._libc_tries:  # a static program maps none: stop looking after a while
            self._libc_tries -= 1
            self.libc = sysinfo.target_libc(self.pid)
        now = time.monotonic()
        if self.pending_n and (now - self.last_flush >= FLUSH_S or self.pending_n >= FLUSH_EVENTS):
            self.flush()
            self.last_flush = now
        self.status.show(self.backend.lost)

    def take_last(self) -> None:
        """One more poll's events kept for :meth:`flush` (what was in flight when tracing stopped)."""
        self.pending.append(self.backend.poll())

    def flush(self) -> None:
        events = Columns.concat(self.pending)
        self.pending, self.pending_n = [], 0
        if len(events):
            self.writer.write(events)


@dataclass
class StopRule:
    """When the recording ends, and why (``reason``: exit, duration or interrupted)."""

    attached: bool
    duration_s: float | None
    deadline: float | None = field(init=False, default=None)
    reason: str = "exit"
    exit_code: int | None = None  # the launched command's

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.duration_s if self.duration_s else None

    def done(self, drain: Drain, interrupts: int, interrupted_at: float) -> bool:
        now = time.monotonic()
        if not self.attached:
            self.exit_code = drain.backend.exit_status()
            if self.exit_code is not None:
                return True
        elif drain.root_gone or not procfs.alive(drain.pid):
            return True
        if self.deadline is not None and now >= self.deadline:
            self.reason = "duration"
            return True
        if interrupts and (self.attached or interrupts > 1 or now - interrupted_at > GRACE_AFTER_INTERRUPT_S):
            self.reason = "interrupted"
            return True
        return False


def root_exited(ev: Columns, pid: int) -> bool:
    """Whether ``ev`` holds the exit of ``pid``'s last task."""
    exits = np.flatnonzero(ev["kind"] == int(Kind.EXIT))  # an int: against an IntEnum numpy widens the array first
    return bool(((ev["pid"][exits] == pid) & ef.exits.last_task(ev[exits])).any())
