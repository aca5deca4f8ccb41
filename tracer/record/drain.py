"""The drain: events move from the backend's rings to the trace file while the target runs.

:class:`Drain` polls the backend, gathers what it gives into batches written at most ``FLUSH_S``
apart (or as soon as ``FLUSH_EVENTS`` are waiting), feeds the status line, notices the traced
process's last task exiting, finds the C library the target maps and samples where its pages
are (residency.py). :class:`StopRule` says when
the recording ends: the launched command exited, the attached process is gone, ``--duration``
passed, or the user interrupted. The session (``session.py``) starts and finishes around them.

Interrupts (SIGINT, SIGTERM) are strace's way: attached, the first one stops the recording and the
process runs on; launched, each one is passed to the command (a SIGINT typed at the terminal has
reached it already, from the terminal) and the recording goes on until the command exits, with its
exit status. Only the third one stops a recording whose command goes on running.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from tracer import fields as ef
from tracer.columns import Columns
from tracer.events import Kind
from tracer.record import procfs, sysinfo
from tracer.record.backends.base import Backend
from tracer.record.residency import ResidencySampler
from tracer.record.status import StatusLine
from tracer.tracefile import TraceWriter

POLL_S = 0.05
FLUSH_S = 1.0  # a SIGKILLed recorder loses at most this much
FLUSH_EVENTS = 1 << 13  # a poll this large goes to disk as it is (no copy into a larger batch)
STOP_AFTER_INTERRUPTS = 3  # launch mode: this many interrupts stop the recording although the command runs
LIBC_TRIES = 40  # polls (2 s) spent looking for the target's C library in /proc/PID/maps


class Drain:
    """Backend -> trace file, one poll at a time."""

    def __init__(self, backend: Backend, writer: TraceWriter, pid: int, status: StatusLine,
                 residency: ResidencySampler | None = None) -> None:
        self.backend, self.writer, self.pid, self.status = backend, writer, pid, status
        self.residency = residency
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
        if self.residency is not None and not self.root_gone:
            where = self.residency.sample()
            if len(where):
                self.pending.append(where)
                self.pending_n += len(where)
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


class Interrupts:
    """The SIGINT and SIGTERM the recorder received (installed as their handler)."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.at = 0.0

    def __call__(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        self.at = time.monotonic()


def from_terminal(sig: int, pid: int) -> bool:
    """Whether ``sig`` most likely came from the keyboard: a SIGINT while the recorder and ``pid``
    are the terminal's foreground process group (the terminal then sent it to both)."""
    if sig != signal.SIGINT:
        return False
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                group = os.tcgetpgrp(fd)
                return group == os.getpgrp() and group == os.getpgid(pid)
        except OSError:
            return False
    return False


@dataclass
class StopRule:
    """When the recording ends, and why (``reason``: exit, duration or interrupted)."""

    attached: bool
    duration_s: float | None
    deadline: float | None = field(init=False, default=None)
    reason: str = "exit"
    exit_code: int | None = None  # the launched command's
    forwarded: list[str] = field(default_factory=list)  # the signals passed to the command
    _handled: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.duration_s if self.duration_s else None

    def done(self, drain: Drain, interrupts: Interrupts) -> bool:
        now = time.monotonic()
        if not self.attached:
            self._forward(drain.pid, interrupts)
            self.exit_code = drain.backend.exit_status()
            if self.exit_code is not None:
                return True
        elif drain.root_gone or not procfs.alive(drain.pid):
            return True
        if self.deadline is not None and now >= self.deadline:
            self.reason = "duration"
            return True
        count = len(interrupts.signals)
        if count and (self.attached or count >= STOP_AFTER_INTERRUPTS):
            self.reason = "interrupted"
            return True
        return False

    def _forward(self, pid: int, interrupts: Interrupts) -> None:
        """Pass each new interrupt to the launched command, unless the terminal sent it there too."""
        for sig in interrupts.signals[self._handled :]:
            if from_terminal(sig, pid):
                continue
            try:
                os.kill(pid, sig)
                self.forwarded.append(signal.Signals(sig).name)
            except ProcessLookupError:  # it has exited already (its status is what the recording ends with)
                pass
        self._handled = len(interrupts.signals)


def root_exited(ev: Columns, pid: int) -> bool:
    """Whether ``ev`` holds the exit of ``pid``'s last task."""
    exits = np.flatnonzero(ev["kind"] == int(Kind.EXIT))  # an int: against an IntEnum numpy widens the array first
    return bool(((ev["pid"][exits] == pid) & ef.exits.last_task(ev[exits])).any())
