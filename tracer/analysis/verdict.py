"""The verdict: the findings of one process told as a few lines, the memory that stayed first.

One line per phase that kept memory (``MEMORY_KEPT_AFTER_FREE``), with the finding that says why
(the part of the heap that held most of it: free chunks under a live block that pins the break,
freed blocks not merged, the top below the trim threshold, thread arenas) and how it ended (the
``malloc_trim`` or ``free`` that gave it back, from the phase's own evidence); one line for each
state at the end that keeps memory and no phase told; one line for the end: what came back while
the program ran and at its exit. Every line carries its bytes, its span on the trace clock and
the numbers of the findings it rests on. Nothing is computed again here: every figure is a
finding's evidence.

``weight`` is ``major`` for the lines that carry the story (a kept line of at least 1 MiB, the
threshold of a phase, and at least a quarter of the largest; the end line when no kept line is),
``minor`` for the rest: the top of the heap glibc keeps by design is a note, not the story.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tracer.analysis.finding import KIB, kib

MAJOR_SHARE = 4  # a kept line is major when it holds at least 1/MAJOR_SHARE of the largest
MAJOR_MIN = 1024 * KIB
ENDED_BY_NS = 50_000_000  # a malloc_trim this close after a phase's end is what ended it
#: a phase's largest part -> the end-state findings that say why it stayed (first found wins)
CAUSES = {
    "free chunks between live blocks": ("BRK_PINNED_BY_LIVE_CHUNK", "FREED_NOT_CONSOLIDATED"),
    "fastbins": ("FREED_NOT_CONSOLIDATED",),
    "tcache": ("FREED_NOT_CONSOLIDATED",),
    "top of the main heap": ("TOP_BELOW_TRIM_THRESHOLD",),
    "thread-arena heaps": ("ARENA_RETAINED",),
}
KEPT_AT_END = ("BRK_PINNED_BY_LIVE_CHUNK", "FREED_NOT_CONSOLIDATED", "ARENA_RETAINED", "TOP_BELOW_TRIM_THRESHOLD")
GIVEN_BACK = ("GIVEN_BACK_WHILE_RUNNING", "RELEASED_BY_TRIM", "MMAP_CHUNK_RETURNED", "ALLOCATOR_DECAY",
              "RETURNED_AT_EXIT", "CHILD_HOLDS_MOST")


@dataclass
class Line:
    text: str
    bytes: int
    start: int  # trace clock ns: the span the line is about
    end: int
    kind: str  # "kept", "end" or "note"
    findings: list[int] = field(default_factory=list)  # the numbers of the findings it rests on
    codes: list[str] = field(default_factory=list)
    weight: str = "minor"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _s(ns: int, t0: int, other: int | None = None) -> str:
    """Seconds since the start: milliseconds apart, or more digits when ``other`` is closer."""
    digits = 3
    while other is not None and digits < 6 and round((ns - t0) / 1e9, digits) == round((other - t0) / 1e9, digits):
        digits += 1
    return f"{(ns - t0) / 1e9:.{digits}f}"


def _span(a: int, b: int, t0: int) -> str:
    return f"{_s(a, t0, b)}–{_s(b, t0, a)} s"


def kept_bytes(f: dict[str, Any]) -> int:
    """What a finding about the state at the end says stays with the allocator."""
    ev, code = f.get("evidence") or {}, f["code"]
    if code == "BRK_PINNED_BY_LIVE_CHUNK":
        return _int(ev.get("release_if_freed"))
    if code == "FREED_NOT_CONSOLIDATED":
        return _int(ev.get("held"))
    if code == "ARENA_RETAINED":
        return _int((ev.get("arenas") or {}).get("free"))
    if code == "TOP_BELOW_TRIM_THRESHOLD":
        return _int(ev.get("top"))
    return 0


def _why(f: dict[str, Any], short: bool = False) -> str:
    """The reason a state at the end gives, as a clause (``short``: after the part it explains is named)."""
    ev, code = f.get("evidence") or {}, f["code"]
    if code == "BRK_PINNED_BY_LIVE_CHUNK":
        b = ev.get("block") or {}
        return (f"under the live {_int(b.get('size')):,}-byte block at {b.get('address', '?')} that pins the break "
                f"(BRK_PINNED_BY_LIVE_CHUNK: freeing it would give back {kib(kept_bytes(f))})")
    if code == "FREED_NOT_CONSOLIDATED":
        return (f"{_int(ev.get('frees')):,} freed blocks not merged into free space (FREED_NOT_CONSOLIDATED; "
                f"malloc_trim(0) would give back about {kib(_int(ev.get('malloc_trim_estimate')))})")
    if code == "ARENA_RETAINED":
        ar = ev.get("arenas") or {}
        who = "for threads still running" if _int(ev.get("threads_running")) else "after their threads exited"
        return f"{'' if short else 'free in '}{_int(ar.get('count'))} thread arena(s) kept {who} (ARENA_RETAINED)"
    if code == "TOP_BELOW_TRIM_THRESHOLD":
        th = (ev.get("thresholds") or {}).get("trim")
        where = "" if short else "the top of the heap, "
        return (f"{where}below the trim threshold {kib(_int(th))} (TOP_BELOW_TRIM_THRESHOLD)"
                if th is not None and _int(ev.get("top")) < _int(th) else
                f"{where}what glibc keeps when it trims (M_TOP_PAD {kib(_int(ev.get('top_pad')))}; "
                "TOP_BELOW_TRIM_THRESHOLD)")
    return f.get("message", "")


def _phase(f: dict[str, Any], t0: int, end: int, by_code: dict[str, list[dict[str, Any]]],
           used: set[int]) -> Line:
    ev = f.get("evidence") or {}
    start = t0 + int(float(ev.get("from_s", 0)) * 1e9)
    stop = max(t0 + int(float(ev.get("to_s", 0)) * 1e9), start)
    kept = _int(ev.get("kept"))
    parts = [(str(k), _int(v)) for k, v in (ev.get("parts") or {}).items()]
    ended = str(ev.get("ended") or "")
    nums, codes = [f["number"]], [f["code"]]
    text = f"{kib(kept)} kept {_span(start, stop, t0)}"
    if parts:
        name, size = parts[0]
        text += f": {kib(size)} in {'the ' if name.startswith('top') else ''}{name}"
        if ended == "kept until the end":  # the state at the end is this phase's
            cause = next((c for code in CAUSES.get(name, ()) for c in by_code.get(code, [])
                          if c["number"] not in used), None)
            if cause is not None:
                used.add(cause["number"])
                text += f", {_why(cause, short=True)}"
                nums.append(cause["number"])
                codes.append(cause["code"])
    trim = next((t for t in by_code.get("RELEASED_BY_TRIM", []) if t["number"] not in used and t.get("ts") is not None
                 and start <= t["ts"] <= stop + ENDED_BY_NS), None)
    if trim is not None:
        used.add(trim["number"])
        nums.append(trim["number"])
        codes.append(trim["code"])
        stop = max(stop, int(trim["ts"]))
        released = _int((trim.get("evidence") or {}).get("released_bytes"))
        ended = f"malloc_trim at {_s(int(trim['ts']), t0)} s gave back {kib(released)}"
    text += f"; {ended}." if ended else "."
    return Line(text, kept, start, max(stop, start + 1), "kept", nums, codes)


def _end_line(found: list[dict[str, Any]], root: int, t0: int, end: int, used: set[int]) -> Line | None:
    """What came back while the program ran and at its exit: the total given back (with the
    malloc_trim calls no phase told), the mmapped blocks, the children, the exit."""
    left = [f for f in found if f["number"] not in used and f["code"] in GIVEN_BACK]
    if not left:
        return None
    by: dict[str, list[dict[str, Any]]] = {}
    for f in left:
        by.setdefault(f["code"], []).append(f)
    clauses: list[str] = []
    trims = [f"{kib(_int((f.get('evidence') or {}).get('released_bytes')))} inside malloc_trim at "
             f"{_s(int(f['ts']), t0)} s" for f in by.get("RELEASED_BY_TRIM", []) if f.get("ts") is not None]
    total = 0
    for f in by.get("GIVEN_BACK_WHILE_RUNNING", []):
        total = _int((f.get("evidence") or {}).get("bytes"))
        more = f", {', '.join(trims)}" if trims else ""
        clauses.append(f"{kib(total)} went back to the kernel while it ran{more}")
    if trims and not by.get("GIVEN_BACK_WHILE_RUNNING"):
        clauses.append("; ".join(trims).replace(" inside ", " went back inside ", 1))
    for f in by.get("MMAP_CHUNK_RETURNED", []):
        ev = f.get("evidence") or {}
        clauses.append(f"{_int(ev.get('count')):,} mmapped block(s) went back with munmap when freed "
                       f"({kib(_int(ev.get('bytes')))})")
    for f in by.get("ALLOCATOR_DECAY", []):
        ev = f.get("evidence") or {}
        back = sum(_int(v) for v in (ev.get("by_advice") or {}).values())
        total = max(total, back)
        clauses.append(f"{ev.get('family', 'the allocator')} gave back {kib(back)} of freed pages later, with madvise")
    for f in by.get("CHILD_HOLDS_MOST", []):
        ev = f.get("evidence") or {}
        clauses.append(f"child process {ev.get('pid')} held the most ({kib(_int(ev.get('rss_anon_peak')))} "
                       "resident at its peak)")
    stop = end
    for f in by.get("RETURNED_AT_EXIT", []):
        ev = f.get("evidence") or {}
        if ev.get("pid") == root:
            clauses.append(f"its last {kib(_int(ev.get('footprint')))} ({kib(_int(ev.get('rss_anon')))} resident) "
                           "went back at its exit")
            stop = int(f["ts"]) if f.get("ts") is not None else end
        else:
            n = len(ev.get("pids") or [ev.get("pid")])
            clauses.append(f"{n:,} other process(es) gave back {kib(_int(ev.get('footprint')))} by exiting")
    for f in left:
        used.add(f["number"])
    first = min((int(f["ts"]) for f in left if f.get("ts") is not None), default=stop - 1)
    exited = any(f["code"] == "RETURNED_AT_EXIT" and (f.get("evidence") or {}).get("pid") == root for f in left)
    head = f"By its exit at {_s(stop, t0)} s" if exited else f"By the end of the recording ({_s(end, t0)} s)"
    return Line(f"{head}: " + "; ".join(clauses) + ".", total, min(first, stop - 1), max(stop, first + 1), "end",
                [f["number"] for f in left], [f["code"] for f in left])


def verdict(findings: list[dict[str, Any]], root: int, t0: int, end: int) -> list[Line]:
    """The verdict of the findings (as JSON, each with its ``number``; ``ts`` on the trace clock) of
    process ``root``, recorded from ``t0`` to ``end`` (ns): kept lines largest first, the end line, the
    other findings."""
    by_code: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_code.setdefault(f["code"], []).append(f)
    used: set[int] = set()
    kept = [_phase(f, t0, end, by_code, used) for f in by_code.get("MEMORY_KEPT_AFTER_FREE", [])]
    used |= {f["number"] for f in by_code.get("MEMORY_KEPT_AFTER_FREE", [])}
    exits = [int(f["ts"]) for f in by_code.get("RETURNED_AT_EXIT", [])
             if (f.get("evidence") or {}).get("pid") == root and f.get("ts") is not None]
    last = min(exits[0], end) if exits else end  # "the end" of the process: its exit, or the recording's
    for code in KEPT_AT_END:
        for f in by_code.get(code, []):
            if f["number"] in used:
                continue
            used.add(f["number"])
            size = kept_bytes(f)
            start = int(f["ts"]) if f.get("ts") is not None else last - max((last - t0) // 40, 1)
            kept.append(Line(f"{kib(size)} kept at the end: {_why(f)}.", size, min(start, last - 1), last, "kept",
                             [f["number"]], [code]))
    kept.sort(key=lambda ln: -ln.bytes)
    top = kept[0].bytes if kept else 0
    for ln in kept:
        if ln.bytes * MAJOR_SHARE >= top and ln.bytes >= MAJOR_MIN:
            ln.weight = "major"
    end_line = _end_line(findings, root, t0, end, used)
    notes = []
    for f in findings:
        if f["number"] in used:
            continue
        at = int(f["ts"]) if f.get("ts") is not None else end - 1
        notes.append(Line(str(f.get("message", "")), 0, at, at + 1, "note", [f["number"]], [f["code"]]))
    major = [ln for ln in kept if ln.weight == "major"]
    if end_line is not None:
        end_line.weight = "major" if not major else "minor"
    return major + ([end_line] if end_line else []) + [ln for ln in kept if ln.weight != "major"] + notes
