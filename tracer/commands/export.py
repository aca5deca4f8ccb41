"""``heapline export TRACE [--perfetto OUT.pftrace] [--pprof OUT.pb.gz] [--pid PID]``: the trace for
the tools people already use.

``--perfetto``: a Perfetto trace (ui.perfetto.dev opens it offline): per process, counter tracks
of its memory series and of what the allocator kept by cause, and instants for every memory call
and every finding (:mod:`tracer.analysis.export.tracks`). ``--pprof``: a gzipped pprof profile of
the bytes allocated, live and retained by allocation site at the end (:mod:`tracer.analysis.sites`),
from a trace recorded with ``--stacks``. ``--pid`` limits both to one traced process (Perfetto
shows every process by default, pprof the traced one).

Errors are one sentence: USAGE without an output or with one path for both, PID_NOT_IN_TRACE,
NO_STACKS for ``--pprof`` of a trace without stacks, OUTPUT_NOT_WRITABLE when an output cannot be
written (found before any work: each output is first opened as a temporary file next to it).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tracer.analysis.export import perfetto as pf
from tracer.analysis.export import pprof as pp
from tracer.analysis.export.tracks import tracks
from tracer.analysis.sites import SAMPLE_TYPES, recorded_stacks, site_figures
from tracer.commands.base import REPORT, Say, quiet, traced
from tracer.errors import Exit, HeaplineError
from tracer.tracefile import open_trace
from tracer.units import human_bytes


class _Output:
    """An output file written next to its final name, then renamed into place."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".heapline-", dir=os.path.dirname(os.path.abspath(path)))
            os.close(fd)
        except OSError as e:
            raise self._error(e) from e

    def _error(self, e: OSError) -> HeaplineError:
        return HeaplineError(f"cannot write {self.path}: {e.strerror or e}", Exit.OUTPUT_NOT_WRITABLE)

    def write(self, data: bytes) -> int:
        try:
            with open(self.tmp, "wb") as f:
                f.write(data)
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise self._error(e) from e
        return len(data)

    def discard(self) -> None:
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def export(trace: str, perfetto: str | None = None, pprof: str | None = None, pid: int | None = None,
           say: Say = quiet) -> dict[str, Any]:
    """Write the outputs asked for; returns what each holds."""
    if not perfetto and not pprof:
        raise HeaplineError("export needs --perfetto FILE or --pprof FILE (or both)", Exit.USAGE)
    if perfetto and pprof and os.path.abspath(perfetto) == os.path.abspath(pprof):
        raise HeaplineError(f"--perfetto and --pprof name the same file ({perfetto})", Exit.USAGE)
    t = open_trace(trace, REPORT)
    traced(t, pid)
    if pprof and recorded_stacks(t) is None:
        raise HeaplineError(f"{trace} has no allocation stacks: record it with heapline record --stacks to "
                            "export a pprof profile", Exit.NO_STACKS)
    outputs = [_Output(p) for p in (perfetto, pprof) if p]
    built: dict[str, Any] = {}
    try:
        if perfetto:
            procs = tracks(t, None if pid is None else [pid], note=say)
            size = outputs[0].write(pf.encode(procs))
            built["perfetto"] = {
                "path": perfetto, "bytes": size, "processes": [p.pid for p in procs],
                "counter_points": sum(len(c.ts) for p in procs for c in p.counters),
                "calls": sum(len(p.calls) for p in procs), "findings": sum(len(p.findings) for p in procs),
            }
            b = built["perfetto"]
            say(f"wrote {perfetto} ({human_bytes(size)}: {len(procs)} process(es), {b['counter_points']} counter "
                f"values, {b['calls']} memory calls, {b['findings']} findings)")
        if pprof:
            fig = site_figures(t, pid)
            t0 = int(t.meta.get("start_ns", fig.at))
            comment = f"heapline export of {os.path.basename(trace)}: pid {fig.pid}, {(fig.at - t0) / 1e9:.3f} s in"
            size = outputs[-1].write(pp.encode(fig, SAMPLE_TYPES, comments=[comment], duration_ns=fig.at - t0))
            built["pprof"] = {"path": pprof, "bytes": size, "pid": fig.pid, "sites": len(fig.values),
                              "inuse_bytes": sum(v[3] for v in fig.values.values()),
                              "retained_bytes": sum(v[4] for v in fig.values.values())}
            b = built["pprof"]
            say(f"wrote {pprof} ({human_bytes(size)}: {b['sites']} allocation sites of process {fig.pid}, "
                f"{human_bytes(b['inuse_bytes'])} live, {human_bytes(b['retained_bytes'])} retained at the end)")
    finally:
        for o in outputs:
            o.discard()
    return built


def run(say: Say, trace: str, perfetto: str | None = None, pprof: str | None = None, pid: int | None = None) -> int:
    export(trace, perfetto, pprof, pid, say)
    return 0
