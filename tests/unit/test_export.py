"""``heapline export``: the Perfetto trace and the pprof profile read back by Perfetto's own protobuf
classes and by ``go tool pprof``, against what the sample workloads printed about themselves and
what the analysis computed."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from exports import annotations, as_of, go_pprof_raw, perfetto_tracks, site_truth
from helpers import ROOT, parse_report
from typer.testing import CliRunner

from tracer.analysis.calls import CALL_KINDS
from tracer.analysis.explain import explain
from tracer.analysis.export import wire
from tracer.analysis.model import build
from tracer.analysis.phases import PARTS
from tracer.analysis.sites import SAMPLE_TYPES, site_figures
from tracer.cli import app
from tracer.decode import format_call
from tracer.errors import Exit
from tracer.events import Kind
from tracer.tracefile import open_trace

TRACES = ROOT / "traces"
SITES = TRACES / "sites.trace"


def own_calls(t, pid: int) -> np.ndarray:  # noqa: ANN001
    """The memory calls of ``pid`` from its last exec on, straight from the events."""
    ev = t.events[t.events["pid"] == pid]
    since = np.flatnonzero(ev["kind"] == Kind.EXEC)
    ev = ev[int(since[-1]):] if len(since) else ev
    return ev[np.isin(ev["kind"], np.array(CALL_KINDS, dtype=np.uint16))]


def export(*args: str) -> str:
    r = CliRunner().invoke(app, ["export", *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_wire_encodings() -> None:
    """Varints as the protobuf encoding guide gives them; a negative int64 takes ten bytes."""
    assert wire.varint(1) == b"\x01" and wire.varint(150) == b"\x96\x01" and wire.varint(300) == b"\xac\x02"
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"
    assert wire.uint(1, 150) == b"\x08\x96\x01" and wire.string(2, "testing") == b"\x12\x07testing"
    assert wire.packed(4, [3, 270, 86942]) == b"\x22\x06\x03\x8e\x02\x9e\xa7\x05"


def test_perfetto_export_reads_back(tmp_path) -> None:
    out = tmp_path / "sites.pftrace"
    said = export(str(SITES), "--perfetto", str(out))
    assert said.startswith("heapline: wrote ") and said.count("\n") == 1
    got = perfetto_tracks(out)
    t = open_trace(str(SITES))
    pid = int(t.meta["pid"])
    procs = got.processes()
    assert list(procs) == [pid]
    proc = got.descriptors[procs[pid]]
    assert proc.process.process_name == "sites" and list(proc.process.cmdline) == ["./sites"]

    # counters: the timeline's series, read at every moment it has
    tl = build(t)
    m = tl.memory
    for name, col in (("heap", "heap"), ("anon mappings", "anon_mapped"), ("live", "live_bytes"),
                      ("footprint (heap + anon mappings)", "footprint"), ("RSS anon", "rss_anon"),
                      ("retained (footprint - live)", "retained")):
        points = got.counters[got.by_name(procs[pid], name)]
        at = m["ts"].to_numpy(np.int64)
        assert [as_of(points, int(x)) for x in at] == m[col].tolist(), name
    # ... and against the workload's own account: what it left live, what the allocator kept of it
    truth = site_truth((TRACES / "sites.out").read_text())
    live = got.counters[got.by_name(procs[pid], "live")]
    assert live[-1][1] == sum(s["live_bytes"] for s in truth.values()) == 10_100
    assert max(v for _, v in live) >= truth["big_site"]["bytes"] + 10_100
    kept = {p: got.counters[got.by_name(procs[pid], f"kept: {p}")] for p in PARTS}
    assert kept["free chunks between live blocks"][-1][1] == truth["spill_site"]["freed_chunks"] == 401_600
    assert kept["tcache"][-1][1] == truth["churn_site"]["freed_chunks"] == 208
    total = got.counters[got.by_name(procs[pid], "kept by the allocator")]
    assert 0 < total[-1][1] <= sum(v[-1][1] for v in kept.values())

    # instants: every memory call of the process, as strace prints it; every finding
    calls = got.instants[got.by_name(procs[pid], "memory calls")]
    ev = own_calls(t, pid)
    assert len(ev) > 10 and [pk.timestamp for pk in calls] == ev["ts"].tolist()
    assert [annotations(pk)["call"] for pk in calls] == [format_call(e) for e in ev]
    mmaps = [annotations(pk) for pk in calls if pk.track_event.name == "mmap"]
    assert any(a["bytes"] == truth["big_site"]["bytes"] + 4096 and a["effect"] == "grew" for a in mmaps)
    found = got.instants[got.by_name(procs[pid], "findings")]
    assert [pk.track_event.name for pk in found] == [f.code for f in explain(t)]
    assert all(annotations(pk)["message"] for pk in found)


def test_perfetto_has_every_process(tmp_path) -> None:
    """A child the trace followed gets its own process track and its own series; --pid exports one."""
    src = TRACES / "scenario-fork-exit.trace"
    t = open_trace(str(src))
    root = int(t.meta["pid"])
    (child,) = sorted(set(t.columns["pid"].tolist()) - {root})
    export(str(src), "--perfetto", str(tmp_path / "all.pftrace"))
    got = perfetto_tracks(tmp_path / "all.pftrace")
    procs = got.processes()
    assert sorted(procs) == sorted([root, child])
    for pid in (root, child):
        heap = got.counters[got.by_name(procs[pid], "footprint (heap + anon mappings)")]
        assert max(v for _, v in heap) == build(t, pid).memory["footprint"].max()
    export(str(src), "--perfetto", str(tmp_path / "child.pftrace"), "--pid", str(child))
    assert list(perfetto_tracks(tmp_path / "child.pftrace").processes()) == [child]


def test_pprof_export_reads_back_with_go_pprof(tmp_path) -> None:
    out = tmp_path / "sites.pb.gz"
    said = export(str(SITES), "--pprof", str(out))
    assert "5 allocation sites" in said
    prof = go_pprof_raw(out, tmp_path)
    assert prof.types == [f"{t}/{u}" for t, u in SAMPLE_TYPES] and prof.default == "inuse_space/bytes"
    by_site = {funcs[0]: values for values, funcs in prof.samples}
    truth = site_truth((TRACES / "sites.out").read_text())
    assert set(by_site) == set(truth)
    for name, s in truth.items():
        alloc_n, alloc_b, inuse_n, inuse_b, retained = by_site[name]
        assert (alloc_n, alloc_b, inuse_n, inuse_b) == (s["allocs"], s["bytes"], s["live"], s["live_bytes"]), name
        assert retained == s["freed_chunks"], name  # big_site's mapping went back at its free: 0
    assert all(funcs[1] == "main" for _, funcs in prof.samples)
    # the analysis's own figures: the timeline's live bytes at the end, the sites' figures
    t = open_trace(str(SITES))
    fig = site_figures(t)
    assert sum(v[3] for v in by_site.values()) == int(build(t).live["live_bytes"].iloc[-1])
    assert sorted(by_site.values()) == sorted(fig.values.values())
    module = t.meta["backend_end"]["stacks"]["modules"][0]
    assert any(module["path"] in ln and module["build_id"] in ln for ln in prof.mappings)


def test_export_errors(tmp_path) -> None:
    """Each error is one sentence and its own exit code, and leaves nothing behind."""
    cases = [
        ([str(SITES)], Exit.USAGE, "needs --perfetto FILE or --pprof FILE"),
        ([str(TRACES / "phases.trace"), "--pprof", str(tmp_path / "p.pb.gz")], Exit.NO_STACKS, "--stacks"),
        ([str(SITES), "--perfetto", str(tmp_path / "no" / "dir" / "x.pftrace")], Exit.OUTPUT_NOT_WRITABLE,
         "cannot write"),
        ([str(SITES), "--perfetto", str(tmp_path / "a"), "--pprof", str(tmp_path / "a")], Exit.USAGE, "same file"),
        ([str(SITES), "--perfetto", str(tmp_path / "x.pftrace"), "--pid", "999999"], Exit.PID_NOT_IN_TRACE,
         "no events of process 999999"),
        ([str(tmp_path / "missing.trace"), "--perfetto", str(tmp_path / "x.pftrace")], Exit.BAD_TRACE, ""),
    ]
    for args, code, words in cases:
        r = CliRunner().invoke(app, ["export", *args])
        assert r.exit_code == code, (args, r.output)
        assert r.output.count("\n") == 1 and words in r.output, r.output
    assert not list(tmp_path.iterdir())
    assert Exit.NO_STACKS == 23 and len({int(c) for c in Exit}) == len(list(Exit))


def test_pprof_is_deterministic(tmp_path) -> None:
    for name in ("a.pb.gz", "b.pb.gz"):
        export(str(SITES), "--pprof", str(tmp_path / name))
    a, b = ((tmp_path / n).read_bytes() for n in ("a.pb.gz", "b.pb.gz"))
    assert a == b and gzip.decompress(a)


@pytest.mark.parametrize("trace", ["phases", "scenario-threads", "phases-attach"])
def test_perfetto_export_of_other_samples(tmp_path, trace: str) -> None:
    """Attached traces (a snapshot first), threads (arenas) and a syscalls-only kind all read back."""
    out = tmp_path / "x.pftrace"
    export(str(TRACES / f"{trace}.trace"), "--perfetto", str(out))
    got = perfetto_tracks(out)
    t = open_trace(str(TRACES / f"{trace}.trace"))
    pid = int(t.meta["pid"])
    calls = got.instants[got.by_name(got.processes()[pid], "memory calls")]
    assert [pk.timestamp for pk in calls] == own_calls(t, pid)["ts"].tolist()


def test_retained_is_what_stays_below_the_break() -> None:
    """workloads/phases frees all 407 blocks; glibc trims the top down to what its last brk line
    says. What it still holds is every byte from the first traced chunk (after the 0x290-byte
    tcache chunk glibc makes itself) to that break: the bytes above it went back with brk."""
    rep = parse_report((TRACES / "phases.out").read_text())
    fig = site_figures(open_trace(str(TRACES / "phases.trace")))
    assert list(fig.values) == [0]  # recorded without --stacks: every block under "no stack"
    allocs, nbytes, live, live_bytes, retained = fig.values[0]
    assert (allocs, nbytes, live, live_bytes) == (407, 407 * 1000, 0, 0)
    assert retained == rep.brk("end") - rep.brk("start") - 0x290
