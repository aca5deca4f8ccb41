"""heapline beside bcc's memleak, on the same allocator functions of the same process.

memleak first: the kernel refuses heapline's tracefs probes where memleak's are (EINVAL);
heapline shares the probes memleak's way, names it, and still sees every call. heapline first:
its recording stays whole, whatever memleak manages (on this kernel memleak's own attach fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from helpers import HEAPLINE, ROOT, needs_root, parse_report, record_attached, run_heapline, workload
from test_alloc import check

from tracer.tracefile import open_trace

MEMLEAK = shutil.which("memleak-bpfcc")
needs_memleak = pytest.mark.skipif(MEMLEAK is None, reason="bcc's memleak (bpfcc-tools) is not installed")


def _memleak(pid: int) -> subprocess.Popen[str]:
    """memleak attached to ``pid`` (reporting every 5 s), once it says it is attached or failed."""
    from tracer.record.backends.bpf import kheaders

    env = {**os.environ, "BCC_KERNEL_SOURCE": kheaders.find().path}  # the headers heapline uses
    ml = subprocess.Popen([MEMLEAK, "-p", str(pid), "5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)
    out = ""
    while "Attaching to pid" not in out:
        line = ml.stdout.readline()
        assert line, f"memleak ended early: {out}"
        out += line
    time.sleep(1.0)  # it prints before it attaches
    return ml


def _stop(ml: subprocess.Popen[str]) -> str:
    ml.terminate()
    try:
        return ml.communicate(timeout=30)[0]
    finally:
        ml.kill()


@needs_root
@needs_memleak
def test_memleak_first_heapline_shares_its_probes_and_misses_nothing(tmp_path) -> None:
    trace = str(tmp_path / "a.trace")
    held: list[subprocess.Popen[str]] = []
    try:
        out = record_attached([workload("alloc_calls"), "--wait", "--extra"], trace,
                              before=lambda pid: held.append(_memleak(pid)))
    finally:
        for ml in held:
            _stop(ml)
    check(trace, parse_report(out))
    notes = open_trace(trace).header["notes"]
    assert any("memleak-bpfcc (pid " in n and "shares them" in n for n in notes), notes

    n = 200_000  # a churn, the calls memleak's probes slow down most, to its end
    trace = str(tmp_path / "churn.trace")
    held.clear()
    try:
        record_attached([workload("malloc_churn"), "--wait", str(n)], trace,
                        before=lambda pid: held.append(_memleak(pid)))
    finally:
        for ml in held:
            _stop(ml)
    s = json.loads(run_heapline("summary", trace, "--json").stdout)
    assert s["events"]["lost"] == 0
    assert (s["alloc"]["calls"]["malloc"], s["alloc"]["calls"]["free"]) == (n, n)
    assert s["alloc"]["unmatched"]["unexplained"] == 0 and s["trace"]["complete"]


@needs_root
@needs_memleak
def test_heapline_first_stays_whole_beside_memleak(tmp_path) -> None:
    trace = str(tmp_path / "a.trace")
    prog = subprocess.Popen([workload("alloc_calls"), "--wait", "--extra"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    rec = None
    try:
        out = ""
        while "HL ready" not in out:
            out += prog.stdout.readline()
        rec = subprocess.Popen([*HEAPLINE, "record", "-o", trace, "-p", str(prog.pid)], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
        err = ""
        while "recording:" not in err:
            line = rec.stderr.readline()
            assert line, err
            err += line
        ml = _memleak(prog.pid)
        prog.stdin.write("g")
        prog.stdin.flush()
        out += prog.stdout.read()
        assert prog.wait(timeout=60) == 0
        _stop(ml)
        assert rec.wait(timeout=60) == 0, rec.stderr.read()
    finally:
        prog.kill()
        if rec is not None:
            rec.kill()
    check(trace, parse_report(out))
