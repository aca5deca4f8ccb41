"""The human-readable summary (``heapline summary``)."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from rich.table import Table

from viz.units import human_bytes


def _addr(v: int) -> str:
    return hex(v) if v else "-"


def print_summary(s: dict[str, Any], console: Console) -> None:
    t = s["target"]
    mode = "attached to" if t["attached"] else "launched"
    code = "" if t["exit_code"] is None else f", exit code {t['exit_code']}"
    console.print(f"[bold]{shlex.join(t['command'])}[/] ({mode} pid {t['pid']}{code}), {s['duration_s']:.3f} s")
    tr = s["trace"]
    ev = s["events"]
    lost = f"[bold red]{ev['lost']:,} lost[/]" if ev["lost"] else "none lost"
    console.print(f"{ev['total']:,} events via {tr['backend']}, {lost}")
    if tr.get("libc"):
        lib = tr["libc"]
        console.print(f"libc: {lib.get('version') or 'unknown'} ({lib.get('path')}, {lib.get('source')})")

    kinds = Table(title="calls", show_edge=False)
    for k in ev["by_kind"]:
        kinds.add_column(k, justify="right")
    kinds.add_row(*[f"{v:,}" for v in ev["by_kind"].values()])
    console.print(kinds)

    b = s["brk"]
    heap = Table(title="program break", show_edge=False)
    for col in ("start", "initial", "peak", "final", "heap at peak", "heap at end", "grows", "shrinks"):
        heap.add_column(col, justify="right")
    heap.add_row(
        _addr(b["start"]), _addr(b["initial"]), _addr(b["peak"]), _addr(b["final"]),
        human_bytes(b["peak"] - b["start"]), human_bytes(b["final"] - b["start"]),
        str(b["grow_calls"]), str(b["shrink_calls"]),
    )
    console.print(heap)

    mem = Table(title="memory", show_edge=False)
    mem.add_column("")
    mem.add_column("peak", justify="right")
    mem.add_column("final", justify="right")
    mem.add_row("anonymous mappings", human_bytes(s["mmap"]["anon_bytes_peak"]), human_bytes(s["mmap"]["anon_bytes_final"]))
    mem.add_row("RSS anon", human_bytes(s["rss"]["anon_peak"]), human_bytes(s["rss"]["anon_final"]))
    console.print(mem)

    m = s["madvise"]
    if m["by_advice"]:
        parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in m["by_advice"].items())
        console.print(f"madvise: {human_bytes(m['released_bytes'])} given back ({parts})")
    else:
        console.print("madvise: none")
