"""The words of the report, each explained once: in the glossary under the timeline, and as the
hover title of the term wherever the page uses it (:func:`term`)."""

from __future__ import annotations

from viz.page import esc

GLOSSARY: dict[str, str] = {
    "break": "the end of the main heap: glibc grows and shrinks it with brk(); sbrk(0) reads it",
    "start_brk": "where the main heap starts (the break before the first brk() grew it)",
    "heap": "the main heap: from start_brk to the break",
    "RSS anon": "anonymous memory in RAM (RssAnon in /proc/PID/status): what freeing must bring down",
    "footprint": "address space: the heap plus every anonymous mapping, in RAM or not",
    "live": "bytes the program asked for (malloc, calloc, realloc, new...) and has not freed",
    "retained": "footprint minus live: address space the program does not hold",
    "chunk": "glibc's unit: a block plus an 8-byte size field, rounded up to 16 bytes (32 at least)",
    "top chunk": "the free space at the end of a heap; only it can be given back by lowering the break",
    "trim threshold": "glibc gives back the top chunk on free() when it exceeds this (128 KiB; twice the mmap "
                      "threshold once that has risen, unless set)",
    "mmap threshold": "requests at least this large get a mapping of their own (128 KiB, rising to the largest "
                      "mmapped chunk freed, up to 32 MiB, unless set)",
    "M_TOP_PAD": "what glibc keeps above the top when it trims or grows the heap (128 KiB by default)",
    "arena": "a glibc heap with its own bins; threads get thread arenas, 64 MiB reservations made "
             "accessible with mprotect as they grow",
    "tcache": "a thread's cache of freed chunks, 7 per size up to 1032-byte requests: never merged until reused",
    "fastbin": "freed chunks of at most 128 bytes (requests up to 120 bytes), not merged until malloc_trim or "
               "a large request consolidates them",
    "malloc_trim": "glibc's call that merges the fastbins, lowers the break and madvises whole free pages "
                   "inside the heaps",
}


def term(name: str, text: str | None = None) -> str:
    """``text`` (the term itself by default) as HTML that explains ``name`` on hover."""
    return f"<dfn title=\"{esc(GLOSSARY[name])}\">{esc(text or name)}</dfn>"


def glossary_html() -> str:
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in GLOSSARY.items())
    return (f"<details id=\"glossary\"><summary>Glossary: break, RSS anon, top chunk, trim threshold, arena, "
            f"tcache…</summary><dl class=\"glossary\">{items}</dl></details>")
