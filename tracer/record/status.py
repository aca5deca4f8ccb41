"""The live status line of a recording (a terminal only; quiet otherwise)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from rich.console import Console
from rich.text import Text

from tracer.columns import Columns
from tracer.events import Kind
from tracer.units import human_bytes, human_rate


class StatusLine:
    """One line on stderr, redrawn in place four times a second.

    The target's own output goes to the same terminal untouched; the status line is cleared
    before each redraw, so at worst a target line is followed by one status line.
    """

    REFRESH_S = 0.25

    def __init__(self, pid: int, enabled: bool) -> None:
        self.pid = pid
        self.enabled = enabled
        self.console = Console(file=sys.stderr, highlight=False, emoji=False)
        self.t0 = time.monotonic()
        self.events = 0
        self.brk: int | None = None
        self.rss: int | None = None
        self._last_draw = 0.0
        self._last_events = 0
        self._last_t = self.t0
        self._rate = 0.0

    def feed(self, ev: Columns) -> None:
        self.events += len(ev)
        if not self.enabled:
            return
        kind, pid = ev["kind"], ev["pid"]
        for k, field, attr in ((Kind.BRK, "ret", "brk"), (Kind.RSS, "a0", "rss")):
            idx = np.flatnonzero(kind == int(k))  # an int: against an IntEnum numpy widens the array first
            idx = idx[pid[idx] == self.pid]
            if len(idx):
                setattr(self, attr, int(ev[field][idx[-1]]))

    def show(self, lost_now: Callable[[], dict[int, int]]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < self.REFRESH_S:
            return
        lost = lost_now()
        dt = now - self._last_t
        if dt > 0:
            self._rate = (self.events - self._last_events) / dt
        self._last_events, self._last_t, self._last_draw = self.events, now, now
        n_lost = sum(lost.values())
        line = Text.assemble(
            ("● rec ", "bold red"),
            f"{now - self.t0:5.1f}s  {self.events:,} events {human_rate(self._rate)}  ",
            f"brk {hex(self.brk) if self.brk else '?'}  rss anon {human_bytes(self.rss) if self.rss else '?'}  ",
            (f"lost {n_lost:,}", "bold red" if n_lost else "dim"),
        )
        with self.console.capture() as cap:
            self.console.print(line, end="", soft_wrap=True)
        sys.stderr.write("\r\x1b[2K" + cap.get()[: self.console.width - 1])
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled and self._last_draw:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
