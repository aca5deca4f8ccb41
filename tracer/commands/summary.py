"""``heapline summary TRACE [--json] [--all-processes]``: the break, mappings, releases, RSS and
allocator figures of a trace, and its findings."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from tracer.analysis.summary import summarize
from tracer.commands.base import SUMMARY, Say
from tracer.commands.text import print_summary
from tracer.tracefile import open_trace


def run(say: Say, trace: str, as_json: bool = False, all_processes: bool = False) -> int:
    t = open_trace(trace, SUMMARY)
    s = summarize(t, all_processes=all_processes)
    if as_json:
        json.dump(s, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_summary(s, Console(highlight=False, emoji=False))
    for note in s["trace"]["notes"]:
        say(note)
    return 0
