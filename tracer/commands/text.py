"""The human-readable summary (``heapline summary``)."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tracer.analysis.explain import condensed
from tracer.decode import RELEASE_ADVICE, advice_value
from tracer.units import human_bytes, literal


def _t(value: object) -> str:
    """What the trace says (the command, paths, names, findings' messages) inside a line of markup:
    shown as it is, its control characters made visible, no markup of its own."""
    return escape(literal(value))


def _addr(v: int) -> str:
    return hex(v) if v else "-"


def print_summary(s: dict[str, Any], console: Console) -> None:
    t = s["target"]
    mode = "attached to" if t["attached"] else "launched"
    code = "" if t["exit_code"] is None else f", exit code {t['exit_code']}"
    console.print(f"[bold]{_t(shlex.join(t['command']))}[/] ({mode} pid {t['pid']}{code}), {s['duration_s']:.3f} s")
    tr = s["trace"]
    ev = s["events"]
    lost = f"[bold red]{ev['lost']:,} lost[/]" if ev["lost"] else "none lost"
    missed = s["alloc"].get("unmatched", {}).get("unexplained", 0)
    if missed:
        lost += f", [bold red]{missed:,} frees of blocks never seen allocated (allocator calls missed)[/]"
    console.print(f"{ev['total']:,} events via {_t(tr['backend'])}, {lost}")
    if tr.get("libc"):
        lib = tr["libc"]
        console.print(f"libc: {_t(lib.get('version') or 'unknown')} ({_t(lib.get('path'))}, {_t(lib.get('source'))})")

    calls = "  ".join(f"{k} [bold]{v:,}[/]" for k, v in ev["by_kind"].items())
    # the target's programs (a launched one's first exec is its launch); not with --all-processes
    programs = 0 if "processes" in s else int(ev["by_kind"].get("exec", 0))
    ran = f" (the {programs} programs pid {t['pid']} ran)" if programs > 1 else ""
    console.print(f"calls{ran}: {calls}")

    b = s["brk"]
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("program break")
    table.add_column("address", justify="right")
    table.add_column("heap (break - start)", justify="right")
    for key in ("start", "initial", "peak", "final"):
        table.add_row(key, _addr(b[key]), human_bytes(b[key] - b["start"]) if b[key] else "-")
    console.print(table)
    console.print(f"break moves: {b['grow_calls']} up, {b['shrink_calls']} down")

    mem = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    mem.add_column("memory")
    mem.add_column("peak", justify="right")
    mem.add_column("final", justify="right")
    mm = s["mmap"]
    mem.add_row("anonymous mappings", human_bytes(mm["anon_bytes_peak"]), human_bytes(mm["anon_bytes_final"]))
    mem.add_row("RSS anon", human_bytes(s["rss"]["anon_peak"]), human_bytes(s["rss"]["anon_final"]))
    console.print(mem)

    m = s["madvise"]
    if m["by_advice"]:
        released = {k: v for k, v in m["by_advice"].items() if advice_value(k) in RELEASE_ADVICE}
        kept = {k: v for k, v in m["by_advice"].items() if k not in released}
        line = f"madvise: {human_bytes(m['released_bytes'])} given back"
        if released:
            line += f" ({', '.join(f'{k} {human_bytes(v)}' for k, v in released.items())})"
        if kept:  # MADV_DONTFORK, MADV_HUGEPAGE...: advice about pages, not a release
            line += f"; advice that frees nothing: {', '.join(f'{k} {human_bytes(v)}' for k, v in kept.items())}"
        console.print(line, markup=False)
    else:
        console.print("madvise: none")

    print_findings(s.get("findings", []), console, int(t["pid"]))
    a = s.get("alloc")
    if a is None:
        return
    if not a.get("traced"):
        reason = (a.get("allocator") or {}).get("reason") or "not traced"
        console.print(f"allocator calls: not traced ({_t(reason)})")
        return
    lib = a.get("allocator") or {}
    made = {k: v for k, v in a["calls"].items() if v}
    total = sum(made.values())
    listing = "  ".join(f"{k} [bold]{v:,}[/]" for k, v in made.items()) or "none"
    which = "allocator calls of the last program" if programs > 1 else "allocator calls"
    console.print(f"{which} ({_t(lib.get('family', '?'))}, {_t(lib.get('library', '?'))}): {total:,}: {listing}")
    for o in a.get("other_allocators", []):
        console.print(f"  not traced: pid {o['pid']} ({_t(o.get('program'))}) gets malloc from {_t(o.get('library'))} "
                      f"({_t(o.get('family'))})")
    if a.get("added_time_s") is not None:
        console.print(
            f"tracing them added about {a['added_time_s']:.3f} s to the run "
            f"({a['cost_per_call_ns']:.0f} ns per call, measured on the recording machine); --no-alloc skips them"
        )
    console.print(
        f"live (requested): peak {human_bytes(a['live_bytes_peak'])}, final {human_bytes(a['live_bytes_final'])}"
        f" in {a['live_blocks_final']:,} blocks; unmatched frees {a['unmatched_frees']:,}{_unmatched(a)}"
    )


def _unmatched(a: dict[str, Any]) -> str:
    """Why frees had no traced allocation, when some did not."""
    u = a.get("unmatched") or {}
    why = {"thread_exit": "glibc's at thread exit", "before_recording": "allocated before the recording",
           "from_parent": "inherited from the parent", "unexplained": "unexplained"}
    parts = [f"{u[k]:,} {text}" for k, text in why.items() if u.get(k)]
    return f" ({', '.join(parts)})" if parts else ""


def _heap_line(name: str, h: dict[str, Any]) -> str:
    b = human_bytes
    line = (f"{name}: {b(h['size'])}: in use {b(h['in_use'])} (live {b(h.get('live_requested', 0))} requested), "
            f"free {b(h['free'])} (top {b(h['top'])}")
    if h.get("free_runs"):
        n = h["free_runs"]
        line += f", {n:,} free chunk{'s' if n != 1 else ''} below it, the largest {b(h['largest_free_run'])}"
    if h.get("fastbins"):
        line += f", fastbins {b(h['fastbins'])}"
    line += ")"
    if h.get("cached"):
        line += f"; cached in tcache {b(h['cached'])}"
    return line


def print_accounting(a: dict[str, Any], console: Console) -> None:
    """The accounting at one moment (``explain``): what each byte of the allocator's memory is."""
    b = human_bytes
    console.print(f"[bold]accounting[/] of pid {a['pid']} at {a['at_s']:.3f} s"
                  + ("" if a["exact"] else " (estimate: some calls were not where the model expected)"))
    al = a.get("allocator")
    if al is not None:  # another allocator's regions: glibc's heap model does not apply
        console.print(f"  {al['family']}: {b(al['mapped'])} mapped by its calls"
                      + (f" (the break's {b(al['heap'])} included)" if al["heap"] else "")
                      + f", {b(al['purged'])} given back with madvise", markup=False, soft_wrap=True)
        if al["resident"] is not None:
            console.print(f"  in RAM there: {b(al['resident'])}, of which live (requested, not freed) "
                          f"{b(al['live_requested'])} in {al['live_blocks']:,} blocks; beyond what is live "
                          f"{b(al['held_beyond_live'])}", markup=False, soft_wrap=True)
        _resident_lines(a["resident"], console, ("allocator", "heap", "stacks", "other"))
        return
    console.print("  " + _heap_line("main heap", a["heap"]), markup=False, soft_wrap=True)
    ar = a["arenas"]
    if ar["count"]:
        console.print(f"  thread arenas: {ar['count']} heap(s), {b(ar['reserved'])} reserved, {b(ar['committed'])} "
                      f"committed: in use {b(ar['in_use'])}, free {b(ar['free'])}", markup=False, soft_wrap=True)
    mm = a["mmapped_chunks"]
    console.print(f"  mmapped chunks: {mm['count']:,}, {b(mm['bytes'])}", markup=False)
    th = a["thresholds"]
    console.print(f"  thresholds: mmap {b(th['mmap'])}, trim {b(th['trim'])}, top pad {b(th['top_pad'])} "
                  f"({th['source']})", markup=False, soft_wrap=True)
    console.print(f"  malloc_trim(0) would give back about {b(a['malloc_trim_estimate'])}", markup=False)
    _resident_lines(a["resident"], console, ("heap", "arenas", "mmapped_chunks", "stacks", "other"))


def _resident_lines(r: dict[str, Any], console: Console, causes: tuple[str, ...]) -> None:
    b = human_bytes
    if r.get("anon") is not None:
        console.print(f"  resident anonymous memory (RssAnon): {b(r['anon'])}", markup=False)
    if r.get("sampled_at_s") is not None:
        parts = ", ".join(f"{k.replace('_', ' ')} {b(r[k])}" for k in causes)
        console.print(f"  where it is (smaps at {r['sampled_at_s']:.3f} s): {parts}", markup=False)


def print_findings(findings: list[dict[str, Any]], console: Console, root: int) -> None:
    if not findings:
        return
    console.print("[bold]findings[/]")
    for f in condensed(findings, root):
        console.print(f"  [bold]{_t(f['code'])}[/]: {_t(f['message'])}", soft_wrap=True)

