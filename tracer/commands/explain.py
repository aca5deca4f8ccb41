"""``heapline explain TRACE [--at S] [--json]``: why memory was or was not returned, with evidence."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from tracer.analysis.explain import explain
from tracer.commands.base import Say
from tracer.commands.text import print_findings
from tracer.tracefile import open_trace


def run(say: Say, trace: str, at: float | None = None, as_json: bool = False) -> int:
    t = open_trace(trace)
    found = [f.to_json() for f in explain(t, at_ns=None if at is None else int(at * 1e9))]
    if as_json:
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif found:
        print_findings(found, Console(highlight=False), int(t.meta["pid"]))
    else:
        Console(highlight=False).print("no findings")
    return 0
