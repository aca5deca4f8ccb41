"""The accounting of jemalloc, tcmalloc and mimalloc against their own figures.

``workloads/allocstats.c`` reads each allocator's statistics through its C API at marked moments
(and its RssAnon), then pauses so that a residency sample sees that state. The accounting at the
end of each pause must say: for jemalloc, ``mapped`` = stats.mapped + stats.retained, exactly; for
mimalloc, ``mapped - purged`` = current_commit, exactly; for all three, the regions' pages in RAM
within 5% of RssAnon (nearly all of the program's anonymous memory is its allocator's), glibc's
heap model empty (no malloc_trim estimate, no thread arenas), and, once everything is freed, the
memory held beyond the live blocks being what is in RAM there.
"""

from __future__ import annotations

import os

import pytest
from helpers import needs_root, parse_report, run_heapline, workload

from tracer.analysis.accounting import account
from tracer.tracefile import open_trace

pytestmark = [pytest.mark.root, needs_root]
LIB = "/usr/lib/x86_64-linux-gnu"
ALLOCATORS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4", "mimalloc": "libmimalloc.so.2"}
PAUSE_MS = 400


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
def test_accounting_of_another_allocator_equals_its_own(tmp_path, name: str) -> None:
    lib = os.path.join(LIB, ALLOCATORS[name])
    if not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    trace = tmp_path / f"{name}.trace"
    r = run_heapline("record", "-q", "-o", str(trace), "-E", f"LD_PRELOAD={lib}", "-E", f"HL_PAUSE_MS={PAUSE_MS}",
                     "--", workload("allocstats"))
    assert r.returncode == 0, r.stderr
    t = open_trace(str(trace))
    marks = parse_report(r.stdout).all("stats")
    assert [m["name"] for m in marks] == ["start", "allocated", "most_freed", "all_freed"]
    assert {m["allocator"] for m in marks} == {name}
    for m in marks[1:]:
        at = int(m["ts"]) + (PAUSE_MS - 20) * 1_000_000  # the end of the pause: a sample saw this state
        a = account(t, at)
        al, res = a["allocator"], a["resident"]
        assert al["family"] == name
        assert (a["malloc_trim_estimate"], a["arenas"]["count"], a["thresholds"]) == (0, 0, None), m["name"]
        if name == "jemalloc":
            assert al["mapped"] == int(m["mapped"]) + int(m["retained"]), m["name"]
        if name == "mimalloc":
            assert al["mapped"] - al["purged"] == int(m["current_commit"]), m["name"]
        assert int(m["ts"]) <= t.meta["start_ns"] + res["sampled_at_s"] * 1e9 <= at, m["name"]
        rss = int(m["rss_anon"])
        assert abs(al["resident"] - rss) <= 0.05 * rss, (m["name"], al["resident"], rss)
    last = account(t, int(marks[-1]["ts"]) + (PAUSE_MS - 20) * 1_000_000)["allocator"]
    assert last["live_requested"] < 1 << 20  # all 40,000 blocks freed
    assert last["held_beyond_live"] == last["resident"] - last["live_requested"]
