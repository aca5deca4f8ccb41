"""``heapline report`` and ``heapline record --html``: the HTML report of one trace.

Each function writes one self-contained HTML page, says what it wrote through ``say`` and returns
what was built; errors are HeaplineError with one sentence (BAD_TRACE for an unreadable trace,
USAGE for bad arguments or findings, OUTPUT_NOT_WRITABLE when the page cannot be written).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tracer.commands.base import REPORT, Say, quiet, traced
from tracer.errors import Exit, HeaplineError

MAX_PAGES = 20  # pages written for the other processes of a trace, those with the highest RSS anon


def default_output(trace: str, pid: int | None = None) -> str:
    """run.trace -> run.html (next to the trace); with ``pid``, run.pid-PID.html."""
    root, ext = os.path.splitext(trace)
    return (root if ext == ".trace" else trace) + (f".pid-{pid}" if pid is not None else "") + ".html"


def load_findings(path: str) -> list[dict[str, Any]]:
    """Findings from a JSON file ('-': stdin): a list of {"code", "message", "evidence", "ts"},
    or an object with that list under "findings"."""
    try:
        if path == "-":
            data = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
    except OSError as e:
        raise HeaplineError(f"cannot read findings from {path}: {e.strerror}", Exit.USAGE) from e
    except ValueError as e:
        raise HeaplineError(f"{path} is not JSON: {e}", Exit.USAGE) from e
    if isinstance(data, dict) and isinstance(data.get("findings"), list):
        data = data["findings"]
    if not isinstance(data, list):
        raise HeaplineError(f"{path}: findings must be a JSON list (or an object with a 'findings' list)", Exit.USAGE)
    return data


def said(built: dict[str, Any], say: Say) -> None:
    size = built["bytes"] / 1e6
    say(f"wrote {built['path']} ({size:.1f} MB, {built['seconds']:.1f} s)")


def page_of(output: str, pid: int) -> str:
    """out.html -> out.pid-PID.html: where the page of another process goes, next to the first."""
    root, ext = os.path.splitext(output)
    return f"{root}.pid-{pid}{ext or '.html'}"


def _explained(t: Any, pid: int | None, say: Say) -> list[dict[str, Any]] | None:
    from tracer.analysis.explain import explain as do_explain

    try:
        return [f.to_json() for f in do_explain(t, pid=pid)]
    except MemoryError:
        raise
    except Exception as e:  # the report is still worth having without its findings
        say(f"findings could not be computed ({type(e).__name__}: {e}); the report has none")
        return None


def report(trace: str, output: str | None = None, findings: str | Sequence[dict[str, Any]] | None = None,
           explain: bool = True, say: Say = quiet, pid: int | None = None) -> dict[str, Any]:
    """``heapline report TRACE [-o OUT.html] [--findings FILE | --no-findings] [--pid PID]``: the HTML
    report of one trace, of its traced process or of ``pid`` (a child it traced).

    ``findings``: a JSON file (or '-') or the list itself; when None, ``explain`` computes them
    (tracer.analysis.explain, for that process), and ``explain=False`` leaves the section out.
    Without ``pid``, every other process of the trace (the ``MAX_PAGES`` with the highest RSS anon)
    gets a page of its own next to it (out.pid-PID.html, with its own findings), and each page's
    process selector links them; with ``pid``, its page links the pages already there.
    Returns write_report's dict of the first page, with ``pages`` (pid, path) of all it wrote; a pid
    the trace has no events of is PID_NOT_IN_TRACE."""
    from tracer.analysis.processes import processes
    from tracer.tracefile import open_trace
    from viz.report import write_report

    t = open_trace(trace, REPORT)
    traced(t, pid)
    found = load_findings(findings) if isinstance(findings, str) else findings
    if found is None and explain:
        found = _explained(t, pid, say)
    out = output or default_output(trace, pid)
    procs = processes(t)
    shown = pid if pid is not None else procs[0].pid
    others = [] if pid is not None else sorted(procs[1:], key=lambda p: -p.rss_anon_peak)[:MAX_PAGES]
    first = os.path.splitext(out)[0].rsplit(".pid-", 1)[0] + ".html" if pid is not None else out
    paths = {p.pid: page_of(first, p.pid) for p in procs[1:]} | {procs[0].pid: first, shown: out}
    written = {shown, *(p.pid for p in others)}
    pages = {p: os.path.basename(f) for p, f in paths.items() if p in written or os.path.exists(f)}
    built = write_report(t, out, found, pid=pid, pages=pages)
    said(built, say)
    if built["reduced"]:
        say("the trace is large: the page draws it reduced (every peak and release kept) and says so")
    built["pages"] = [{"pid": shown, "path": out}]
    for k, p in enumerate(others, 1):
        say(f"process {k} of {len(others)}: pid {p.pid} ({p.program or '?'})")
        own = _explained(t, p.pid, say) if explain and not isinstance(findings, str) else None
        child = write_report(t, paths[p.pid], own, pid=p.pid, pages=pages)
        said(child, say)
        built["pages"].append({"pid": p.pid, "path": paths[p.pid]})
    return built


def record_html(trace: str, html: str, say: Say = quiet) -> dict[str, Any]:
    """``heapline record --html OUT.html``: the report (with findings) of the trace just written."""
    return report(trace, html, None, True, say)


def run(say: Say, trace: str, output: str | None = None, findings: str | None = None,
        no_findings: bool = False, pid: int | None = None) -> int:
    report(trace, output, findings, explain=not no_findings, say=say, pid=pid)
    return 0
