"""The process selector at the top of a report: every process the trace holds, named by the program
it runs, with its highest RSS anon and allocator calls; choosing one opens its own page (its own
timeline, accounting and findings). Processes whose page was not written are listed, not linked."""

from __future__ import annotations

from tracer.analysis.processes import Process
from tracer.units import human_bytes
from viz.page import esc


def _option(p: Process, shown: int, href: str | None) -> str:
    text = (f"{p.label} · RSS anon peak {human_bytes(p.rss_anon_peak)} · {p.alloc_calls:,} allocator calls"
            + ("" if href else " (no page: heapline report --pid " + str(p.pid) + ")"))
    attrs = f" value=\"{esc(href)}\"" if href else " value=\"\" disabled"
    return f"<option{attrs}{' selected' if p.pid == shown else ''} data-pid=\"{p.pid}\">{esc(text)}</option>"


def processes_nav(procs: list[Process], shown: int, pages: dict[int, str]) -> str:
    """The selector (empty for a trace of one process); ``pages``: pid -> the file name of its page,
    relative to the page being written."""
    if len(procs) < 2:
        return ""
    options = "".join(_option(p, shown, pages.get(p.pid)) for p in procs)
    return (f"<nav id=\"processes\" aria-label=\"processes\"><label for=\"hl-proc\">{len(procs)} processes traced:"
            f"</label> <select id=\"hl-proc\">{options}</select></nav>")
