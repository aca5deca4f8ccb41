"""How fast the HTML report is built and drawn, on synthetic traces of 100k, 1M and 10M events.

    .venv/bin/python bench/report_bench.py [--sizes 100000,1000000,10000000] [--keep DIR]

Each trace is synthesized with the event schema the way a glibc program fills one: mostly
malloc/free (a phase that accumulates blocks, churn, a phase that frees most of them, a retained
tail), large blocks served by mmap/munmap, the break growing and trimmed, a thread arena reserved
with PROT_NONE and opened by mprotect, madvise(MADV_DONTNEED) inside it, a malloc_trim, a mallopt,
and RSS samples every millisecond; it is written with TraceWriter like a recording. Printed for
each: events; seconds to read the trace (open_trace), to build the model (model.build) and to
account the heap at the end (accounting.account: chunks, tcache, fastbins; after the model), each
measured alone; seconds for the whole report (write_report: read, model, figures, page); the
HTML size; and, in headless Chromium (median of 3 loads from navigation start), the first
contentful paint (header and key figures) and the figures drawn. First, the time plotly.js alone
takes to parse and start on this machine: no page that inlines it draws sooner.
Goal for 10M events: under 10 s to build, under 15 MB, under 2 s to render.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))  # the headless-Chromium helper the tests use too

from tracer.events import EVENT_DTYPE, Kind  # noqa: E402
from tracer.tracefile import TraceWriter  # noqa: E402

PID = 4242
T0 = 5_000_000_000_000
START_BRK = 0x5555_5600_0000
MMAP_TOP = 0x7F00_0000_0000
ARENA = 0x7E00_0000_0000
ARENA_SIZE = 64 << 20
STEP = 132 << 10
PAGE = 4096
FD_NONE = 0xFFFF_FFFF_FFFF_FFFF


def _rows(n: int, kind: Kind, ts: np.ndarray, dur: int | np.ndarray = 0) -> np.ndarray:
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["ts"], ev["dur"], ev["pid"], ev["tid"], ev["kind"] = ts, dur, PID, PID, int(kind)
    return ev


def _lifetimes(rng: np.random.Generator, at: np.ndarray, duration: int) -> np.ndarray:
    """Short-lived churn everywhere; blocks of the first 30% mostly live until 60-75%; a few forever."""
    life = rng.exponential(50_000, len(at)).astype(np.int64) + 200
    build = at < 0.3 * duration
    hold = build & (rng.random(len(at)) < 0.35)
    life[hold] = (rng.uniform(0.6, 0.75, hold.sum()) * duration).astype(np.int64) - at[hold]
    forever = hold & (rng.random(len(at)) < 0.08)
    life[forever] = 2 * duration
    return life


def synthesize(path: str, n_events: int, seed: int = 1) -> int:
    """Write a trace of about ``n_events`` events to ``path``; returns the exact count."""
    rng = np.random.default_rng(seed)
    duration = n_events * 1000  # about one event per microsecond
    n_rss = duration // 1_000_000
    blocks = max(100, (n_events - n_rss) // 2 - n_events // 400)
    at = np.sort(rng.integers(1_000_000, duration - 1_000_000, blocks)).astype(np.int64)
    at += np.arange(blocks) % 7  # distinct times
    size = np.exp(rng.normal(4.2, 1.1, blocks)).astype(np.int64) + 8
    medium = rng.random(blocks) < 0.05
    size[medium] = rng.integers(1 << 10, 32 << 10, medium.sum())
    large = rng.random(blocks) < 0.0006
    size[large] = rng.integers(128 << 10, 4 << 20, large.sum())
    ends = at + _lifetimes(rng, at, duration)
    freed = ends < duration - 500_000
    ptr = (START_BRK + 0x10 + 16 * np.arange(blocks)).astype(np.uint64)
    map_len = ((size[large] + 16 + PAGE - 1) // PAGE * PAGE).astype(np.uint64)
    map_addr = (MMAP_TOP - np.cumsum(map_len + PAGE)).astype(np.uint64)
    ptr[large] = map_addr + 16

    parts = []
    m = _rows(blocks, Kind.MALLOC, T0 + at, rng.integers(60, 400, blocks))
    m["a0"], m["ret"] = size, ptr.astype(np.int64)
    m["dur"][large] = 6000
    parts.append(m)
    f = _rows(int(freed.sum()), Kind.FREE, T0 + ends[freed], rng.integers(40, 200, int(freed.sum())))
    f["a0"] = ptr[freed]
    f["dur"][large[freed]] = 4000
    parts.append(f)
    mm = _rows(int(large.sum()), Kind.MMAP, T0 + at[large] + 500, 2500)
    mm["a1"], mm["a2"], mm["a3"], mm["a4"], mm["ret"] = map_len, 3, 0x22, FD_NONE, map_addr.astype(np.int64)
    parts.append(mm)
    gone = freed[large]
    mu = _rows(int(gone.sum()), Kind.MUNMAP, T0 + ends[large][gone] + 300, 2000)
    mu["a0"], mu["a1"] = map_addr[gone], map_len[gone]
    parts.append(mu)

    # the break follows the small and medium blocks live, with glibc's 132 KiB steps and top trims
    heap_ev = ~large
    t_ch = np.concatenate([at[heap_ev], ends[heap_ev & freed]])
    d_ch = np.concatenate([size[heap_ev], -size[heap_ev & freed]])
    order = np.argsort(t_ch, kind="stable")
    t_ch, live = t_ch[order], np.cumsum(d_ch[order] * 5 // 4)
    grid = np.arange(0, duration, max(20_000, duration // 20_000))
    want = live[np.clip(np.searchsorted(t_ch, grid, side="right") - 1, 0, None)]
    brk_ts, brk_val, heap = [1000], [START_BRK], 0
    for t, w in zip(grid.tolist(), want.tolist(), strict=True):
        if w > heap:
            while heap < w:
                heap += STEP
                brk_ts.append(t + len(brk_ts) % 5)
                brk_val.append(START_BRK + heap)
        elif heap - w > 4 * STEP and rng.random() < 0.3:
            heap = (w // STEP + 1) * STEP
            brk_ts.append(t + 1)
            brk_val.append(START_BRK + heap)
    b = _rows(len(brk_ts), Kind.BRK, T0 + np.array(brk_ts), 900)
    b["a0"] = np.array(brk_val, dtype=np.uint64)
    b["a0"][0] = 0
    b["ret"] = np.array(brk_val, dtype=np.int64)
    parts.append(b)

    # a thread arena: reserved, opened step by step, parts of it given back with madvise
    steps = max(20, n_events // 50_000)
    arena = _rows(1, Kind.MMAP, np.array([T0 + duration // 50]), 3000)
    arena["a1"], arena["a3"], arena["a4"], arena["ret"] = ARENA_SIZE, 0x4022, FD_NONE, ARENA
    parts.append(arena)
    mp = _rows(steps, Kind.MPROTECT, T0 + np.linspace(duration // 50 + 10_000, duration // 2, steps).astype(np.int64),
               1500)
    mp["a0"], mp["a1"], mp["a2"] = ARENA, np.arange(1, steps + 1) * STEP, 3
    parts.append(mp)
    n_adv = max(10, n_events // 20_000)
    adv = _rows(n_adv, Kind.MADVISE, T0 + np.sort(rng.integers(duration // 2, int(duration * 0.9), n_adv)), 3000)
    adv["a0"] = ARENA + rng.integers(0, steps, n_adv).astype(np.uint64) * STEP
    adv["a1"], adv["a2"] = rng.integers(1, 32, n_adv).astype(np.uint64) * PAGE, 4
    parts.append(adv)
    trim_at = int(duration * 0.8)
    trim = _rows(1, Kind.MALLOC_TRIM, np.array([T0 + trim_at]), 2_000_000)
    trim["ret"] = 1
    parts.append(trim)
    inside = _rows(3, Kind.MADVISE, T0 + trim_at + np.array([100_000, 400_000, 900_000]), 20_000)
    inside["a0"], inside["a1"], inside["a2"] = ARENA + np.array([0, 8, 20], dtype=np.uint64) * STEP, 4 * STEP, 4
    parts.append(inside)
    opt = _rows(1, Kind.MALLOPT, np.array([T0 + 500]), 300)
    opt["a0"], opt["a1"], opt["ret"] = np.uint64((1 << 64) - 3), 131072, 1
    parts.append(opt)

    # RSS every millisecond: the heap mostly touched, the large blocks, the arena less what was advised
    rt = np.arange(1, n_rss + 1) * 1_000_000
    heap_at = np.array(brk_val)[np.clip(np.searchsorted(brk_ts, rt, side="right") - 1, 0, None)] - START_BRK
    big = np.zeros(len(rt))
    if large.any():
        big += np.searchsorted(np.sort(at[large]), rt) * float(map_len.mean())
        big -= np.searchsorted(np.sort(ends[large][gone]), rt) * float(map_len.mean())
    opened = np.clip(np.searchsorted(mp["ts"] - T0, rt), 0, None) * STEP * 0.7
    anon = (heap_at * 0.85 + np.maximum(big, 0) + opened).astype(np.int64) // PAGE * PAGE + 65536
    r = _rows(n_rss, Kind.RSS, T0 + rt)
    r["a0"], r["a1"], r["a4"], r["aux"] = anon, 2 << 20, anon + PAGE * rng.integers(0, 8, n_rss), 0
    parts.append(r)
    ex = _rows(1, Kind.EXIT, np.array([T0 + duration]))
    ex["a1"], ex["a2"] = 1, 1
    parts.append(ex)

    ev = np.concatenate(parts)
    ev = ev[np.argsort(ev["ts"], kind="stable")]
    ev["cpu"] = rng.integers(0, 2, len(ev))
    header = {
        "tool": "heapline bench", "command": ["./synthetic", str(n_events)], "pid": PID, "attached": False,
        "start_ns": T0, "clock": "CLOCK_MONOTONIC",
        "machine": {"kernel": os.uname().release, "machine": "x86_64", "page_size": PAGE, "cpus": 2},
        "backend": {"name": "bpf", "allocator": {"traced": True, "library": "libc.so.6", "family": "glibc"}},
        "snapshot": None,
    }
    w = TraceWriter(path)
    w.start(header)
    for i in range(0, len(ev), 1 << 20):
        w.write(ev[i : i + (1 << 20)])
    w.close({"end_ns": T0 + duration, "duration_ns": duration, "exit_code": 0, "lost": {}, "lost_total": 0,
             "libc": {"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "version": "glibc 2.36", "source": "synthetic"}})
    return len(ev)


def _render(html: str, loads: int = 3) -> tuple[float, float]:
    """Median seconds from navigation start to the first contentful paint and to the figures drawn."""
    from browser import Browser, chromium_path

    if chromium_path() is None:
        return float("nan"), float("nan")
    paint, drawn = [], []
    with Browser() as b:
        for _ in range(loads):
            page = b.open(html)
            drawn.append(page.wait_rendered() / 1000)
            paint.append(page.eval("performance.getEntriesByName('first-contentful-paint')[0].startTime") / 1000)
            page.close()
    return statistics.median(paint), statistics.median(drawn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--keep", help="write the traces and reports here instead of a temporary folder")
    args = ap.parse_args()
    from tracer.analysis.accounting import account, last_moment
    from tracer.analysis.model import build
    from tracer.tracefile import open_trace
    from viz.page import plotly_js
    from viz.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        alone = where / "plotly-alone.html"
        alone.write_text(f"<!DOCTYPE html><html><body><p>plotly.js alone</p><script>{plotly_js()}</script>"
                         "<script>window.__heapline = {rendered: performance.now()}</script></body></html>")
        print(f"plotly.js alone (parse and start, the floor of any page): {_render(str(alone))[1]:.2f} s")
        print(f"{'events':>12} {'read s':>7} {'model s':>8} {'account s':>9} {'build s':>8} {'html MB':>8} "
              f"{'paint s':>8} {'drawn s':>8}  reduced")
        for n in (int(s) for s in args.sizes.split(",")):
            trace, html = str(where / f"synthetic-{n}.trace"), str(where / f"synthetic-{n}.html")
            count = synthesize(trace, n)
            t = time.perf_counter()
            opened = open_trace(trace)
            read = time.perf_counter() - t
            t = time.perf_counter()
            build(opened)
            model = time.perf_counter() - t
            t = time.perf_counter()
            account(opened, last_moment(opened))  # the heap accounting at the end (chunks, tcache, fastbins)
            accounting = time.perf_counter() - t
            del opened
            t = time.perf_counter()
            built = write_report(trace, html)  # all of it: read, model, figures, page
            total = time.perf_counter() - t
            size = os.path.getsize(html) / 1e6
            paint, drawn = _render(html)
            note = "yes" if built["reduced"] else "no"
            print(f"{count:>12,} {read:>7.2f} {model:>8.2f} {accounting:>9.2f} {total:>8.2f} {size:>8.2f} "
                  f"{paint:>8.2f} {drawn:>8.2f}  {note}", flush=True)


if __name__ == "__main__":
    main()
