"""The two ways the probes are loaded (the CO-RE object through libbpf, bcc compiling them) record
the same calls: each run passes the program's own account (test_alloc.check), and the two traces
of one deterministic workload agree on what each call was."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import ROOT, needs_root, parse_report, run_heapline, workload
from test_alloc import check, window

from tracer.events import Kind
from tracer.tracefile import open_trace

CORE_OBJECT = ROOT / "probes" / "build" / "heapline.bpf.o"
needs_object = pytest.mark.skipif(not CORE_OBJECT.is_file(), reason="the CO-RE object is not built (make probes)")
SYSCALLS_COMPARED = (Kind.BRK, Kind.MPROTECT, Kind.MADVISE, Kind.FORK, Kind.EXEC, Kind.EXIT)


def _record(loader: str, trace: str, *cmd: str) -> str:
    r = run_heapline("record", "-q", "--no-aslr", "-o", trace, "--", *cmd,
                     env={**os.environ, "HEAPLINE_LOADER": loader})  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _calls(trace: str, pid: int) -> list[tuple[int, ...]]:
    """The program's counted allocator calls, in order: kind, aux and the sizes asked for."""
    ev = window(open_trace(trace).events, pid)
    ev = ev[np.argsort(ev["ts"], kind="stable")]
    sized = np.isin(ev["kind"], [Kind.MALLOC, Kind.CALLOC, Kind.NEW])
    return [(int(e["kind"]), int(e["aux"]), int(e["a0"]) if s else -1, int(e["tid"] == pid))
            for e, s in zip(ev, sized, strict=True)]  # fmt: skip


def _syscalls(trace: str) -> dict[str, int]:
    kinds = open_trace(trace).events["kind"]
    return {Kind(k).name: int((kinds == k).sum()) for k in SYSCALLS_COMPARED}


@needs_root
@needs_object
def test_core_and_bcc_record_the_same_calls(tmp_path) -> None:
    got = {}
    for loader in ("core", "bcc"):
        trace = str(tmp_path / f"{loader}.trace")
        rep = parse_report(_record(loader, trace, workload("alloc_calls"), "--extra", "--threads", "0"))
        check(trace, rep)
        header = open_trace(trace).header
        assert header["backend"]["loader"] == loader
        pid = int(rep.all("pid")[0]["pid"])
        got[loader] = (_calls(trace, pid), _syscalls(trace))
    assert got["core"][0] == got["bcc"][0]
    assert got["core"][1] == got["bcc"][1]


@needs_root
@needs_object
def test_auto_loads_the_core_object_without_bcc(tmp_path) -> None:
    trace = str(tmp_path / "t.trace")
    r = run_heapline("record", "-o", trace, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    assert t.header["backend"]["loader"] == "core"
    assert "kernel_headers" not in t.header["backend"]  # nothing was compiled
    assert not any("bcc" in n for n in t.header["notes"]), t.header["notes"]


@needs_root
def test_an_unknown_loader_is_refused(tmp_path) -> None:
    r = run_heapline("record", "--backend", "bpf", "-o", str(tmp_path / "t.trace"), "--", "/bin/true",
                     env={**os.environ, "HEAPLINE_LOADER": "llvm"})  # fmt: skip
    assert r.returncode != 0 and "HEAPLINE_LOADER" in r.stderr
