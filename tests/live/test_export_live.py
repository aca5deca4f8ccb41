"""``heapline export`` of a fresh ``record --stacks``: the exports read back, by Perfetto's classes
and ``go tool pprof``, to what workloads/sites printed about its own allocation sites."""

from __future__ import annotations

from exports import go_pprof_raw, perfetto_tracks, site_truth
from helpers import needs_root, run_heapline, workload

from tracer.tracefile import open_trace


@needs_root
def test_record_stacks_then_export(tmp_path) -> None:
    trace = str(tmp_path / "s.trace")
    r = run_heapline("record", "--stacks", "-q", "-o", trace, "--", workload("sites"))
    assert r.returncode == 0, r.stderr
    truth = site_truth(r.stdout)
    pft, pb = tmp_path / "s.pftrace", tmp_path / "s.pb.gz"
    e = run_heapline("export", trace, "--perfetto", str(pft), "--pprof", str(pb))
    assert e.returncode == 0, e.stderr
    assert e.stderr.count("heapline: wrote ") == 2

    prof = go_pprof_raw(pb, tmp_path)
    by_site = {funcs[0]: values for values, funcs in prof.samples}
    assert set(by_site) == set(truth), by_site
    for name, s in truth.items():
        assert by_site[name] == [s["allocs"], s["bytes"], s["live"], s["live_bytes"], s["freed_chunks"]], name

    got = perfetto_tracks(pft)
    proc = got.processes()[int(open_trace(trace).meta["pid"])]
    live = got.counters[got.by_name(proc, "live")]
    assert live[-1][1] == sum(s["live_bytes"] for s in truth.values())
    between = got.counters[got.by_name(proc, "kept: free chunks between live blocks")]
    assert between[-1][1] == truth["spill_site"]["freed_chunks"]
