"""Who holds it: the bytes by allocation site (``record --stacks``), as a table per moment.

Each moment (the end, and the middle of each phase that kept memory) gets one table of the sites
that hold the most there: live bytes (requested, not freed: their sum is the live series at that
moment) and retained bytes (chunks whose last occupant was a block from that site, freed, that the
allocator still holds), from :func:`tracer.analysis.sites.site_figures`. Drawing only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.analysis.sites import Frame, SiteFigures, site_text
from tracer.units import human_bytes
from viz.glossary import term
from viz.page import esc

#: the sites shown per moment; the rest are summed in one row
ROWS = 20


@dataclass
class SitesAt:
    label: str  # "at the end (0.518 s)", "during 2.39–3.64 s (at 3.01 s)"
    figures: SiteFigures


def _frames_html(fr: list[Frame]) -> str:
    items = []
    for f in fr:
        where = f"{f.module or '?'}" + (f"+{f.offset:#x}" if f.offset is not None else "")
        items.append(f"<li><code>{esc(f.function or '?')}</code> <span class=\"sub\">{esc(where)}</span></li>")
    return f"<ol class=\"stack\">{''.join(items)}</ol>"


def _bytes(n: int) -> str:
    return f"<td data-bytes=\"{n}\" title=\"{n:,} bytes\">{esc(human_bytes(n))}</td>"


def _row(sid: int, fr: list[Frame], v: list[int]) -> str:
    alloc_n, alloc_b, live_n, live_b, kept = v
    name = site_text(fr) if fr else "(no stack recorded)"
    first = next((f.function for f in fr if f.function), "") if fr else ""
    cell = (f"<details><summary>{esc(name)}</summary>{_frames_html(fr)}</details>" if fr else esc(name))
    return (f"<tr data-stack=\"{sid}\" data-site=\"{esc(first)}\" data-live=\"{live_b}\" data-retained=\"{kept}\" "
            f"data-allocs=\"{alloc_n}\"><td class=\"site\">{cell}</td>{_bytes(live_b)}<td>{live_n:,}</td>"
            f"{_bytes(kept)}<td>{alloc_n:,}</td>{_bytes(alloc_b)}</tr>")


def table_html(s: SitesAt) -> str:
    f = s.figures
    order = sorted(f.values, key=lambda k: (-(f.values[k][3] + f.values[k][4]), -f.values[k][1], k))
    shown, rest = order[:ROWS], order[ROWS:]
    rows = [_row(k, f.stacks.get(k, []), f.values[k]) for k in shown]
    if rest:
        summed = [sum(f.values[k][i] for k in rest) for i in range(5)]
        rows.append(f"<tr class=\"rest\"><td>{len(rest):,} more sites</td>{_bytes(summed[3])}<td>{summed[2]:,}</td>"
                    f"{_bytes(summed[4])}<td>{summed[0]:,}</td>{_bytes(summed[1])}</tr>")
    total = [sum(v[i] for v in f.values.values()) for i in range(5)]
    head = (f"<tr><th>allocated by</th><th>{term('live')}</th><th>live blocks</th>"
            f"<th><dfn title=\"{esc(RETAINED)}\">retained after free</dfn></th><th>allocations</th>"
            "<th>bytes allocated</th></tr>")
    foot = (f"<tr class=\"total\"><th>all sites</th>{_bytes(total[3])}<td>{total[2]:,}</td>{_bytes(total[4])}"
            f"<td>{total[0]:,}</td>{_bytes(total[1])}</tr>")
    return (f"<table class=\"sites\" data-at=\"{f.at}\"><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
            f"<tfoot>{foot}</tfoot></table>")


RETAINED = ("chunk bytes whose last occupant was a block allocated here and freed, that the allocator still "
            "holds (below the break or in an arena's accessible heap, not given back since)")


def sites_html(moments: list[SitesAt]) -> str:
    """The section, or "" when the trace recorded no stacks (no moments)."""
    if not moments:
        return ""
    parts = []
    for i, s in enumerate(moments):
        parts.append(f"<details class=\"moment\"{' open' if i == 0 else ''}><summary>{esc(s.label)}</summary>"
                     f"{table_html(s)}</details>")
    return ("<section id=\"sites\"><h2>Who holds it: bytes by allocation site</h2>"
            "<p class=\"sub\">From the allocation stacks recorded with <code>--stacks</code>, the caller first. "
            "Live bytes are what each site's blocks still hold; retained bytes are what its freed blocks left "
            "with the allocator.</p>" + "".join(parts) + "</section>")
