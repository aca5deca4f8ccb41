"""``heapline explain TRACE [--at S] [--pid PID] [--json]``: the heap accounting at a moment (the end
by default) and the findings, with evidence."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from tracer.analysis.accounting import account, last_moment
from tracer.analysis.explain import explain
from tracer.commands.base import EXPLAIN, Say, traced
from tracer.commands.text import print_accounting, print_findings
from tracer.errors import Exit, HeaplineError
from tracer.tracefile import Trace, open_trace


def _moment(t: Trace, at: float | None, pid: int | None) -> int:
    """The absolute ns of ``at`` seconds into the recording (the end when None)."""
    cols = t.columns
    t0 = int(t.meta.get("start_ns", cols["ts"][0] if len(cols) else 0))
    if at is None:  # the end, or the last moment the process had its memory
        return last_moment(t, pid)
    if at < 0 or at != at:
        raise HeaplineError(f"--at takes seconds from the start of the recording, not {at}", Exit.USAGE)
    return t0 + int(at * 1e9)


def report(t: Trace, at: float | None = None, pid: int | None = None) -> dict[str, Any]:
    """What ``explain --json`` prints: the accounting at the moment and the findings."""
    traced(t, pid)
    ts = _moment(t, at, pid)
    found = [f.to_json() for f in explain(t, at_ns=None if at is None else int(at * 1e9), pid=pid)]
    acc = account(t, ts, pid)
    acc["program"] = _program(t, acc["pid"])
    return {"accounting": acc, "findings": found}


def _program(t: Trace, pid: int) -> str | None:
    """What the process runs: the traced command for the traced process, else unknown here."""
    if pid == int(t.meta["pid"]):
        cmd = t.meta.get("command") or []
        return str(cmd[0]) if cmd else None
    return None


def run(say: Say, trace: str, at: float | None = None, as_json: bool = False, pid: int | None = None) -> int:
    t = open_trace(trace, EXPLAIN)
    out = report(t, at, pid)
    if as_json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console = Console(highlight=False, emoji=False)
    print_accounting(out["accounting"], console)
    if out["findings"]:
        print_findings(out["findings"], console, int(t.meta["pid"]))
    else:
        console.print("no findings")
    return 0
