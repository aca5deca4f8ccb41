"""``heapline compare A.trace B.trace [...] -o OUT.html [--stack]``: traces side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracer.commands.base import REPORT, Say, quiet
from tracer.commands.report import said
from tracer.errors import Exit, HeaplineError


def compare(traces: Sequence[str], output: str, stack: bool = False, say: Say = quiet) -> dict[str, Any]:
    """``heapline compare A.trace B.trace [...] -o OUT.html [--stack]``: traces side by side on aligned time
    axes, with a table of peak/final footprint, RSS and bytes given back. Returns write_compare's dict."""
    from tracer.tracefile import open_trace
    from viz.compare import write_compare

    if len(traces) < 2:
        raise HeaplineError("compare needs at least two traces", Exit.USAGE)
    built = write_compare([open_trace(t, REPORT) for t in traces], output, stack=stack)
    said(built, say)
    return built


def run(say: Say, traces: list[str], output: str, stack: bool = False) -> int:
    compare(traces, output, stack=stack, say=say)
    return 0
