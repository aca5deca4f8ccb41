"""What every command shares: where it says things, and how it ends.

A command is a function ``run(say, **options) -> int`` in its own module: it does its work through
the rooms below (``tracer.record``, ``tracer.analysis``, ``viz``), writes its output, reports progress
and notes through ``say`` (one line each, on stderr) and returns the process's exit code. Errors a
user can hit are :class:`tracer.errors.HeaplineError`; ``tracer.cli`` turns them into one sentence
and their exit code, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rich.text import Text

from tracer.errors import Exit, HeaplineError
from tracer.tracefile import Need

#: what each reading command holds per event beside the trace's columns, at its peak (bench/replay_bench.py
#: measures it on 10M and 40M events: summary and explain 125, report 185; a margin above)
SUMMARY = Need("a summary", 160)
EXPLAIN = Need("explaining it", 160)
REPORT = Need("a report", 240)

#: what a command says: plain text (printed as it is: control characters made visible, no markup),
#: or a Text the command styled itself from literal parts
Say = Callable[[str | Text], None]


def traced(trace: Any, pid: int | None) -> None:
    """``--pid``: refuse, in one sentence, a process the trace has no events of."""
    if pid is not None and not (trace.columns["pid"] == pid).any():
        pids = np.unique(trace.columns["pid"]).tolist()
        shown = ", ".join(map(str, pids[:10])) + (" ..." if len(pids) > 10 else "")
        raise HeaplineError(f"the trace has no events of process {pid} (it traced: {shown or 'none'})",
                            Exit.PID_NOT_IN_TRACE)


def quiet(_: str | Text) -> None:
    """A ``say`` that says nothing."""
