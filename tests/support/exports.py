"""The exports read back by parsers that are not heapline's: Perfetto's own generated protobuf
classes (the ``perfetto`` package's ``perfetto_trace_pb2``, on Google's ``protobuf`` runtime) and
``go tool pprof``; and the checks of what they read against a workload's own report and the analysis."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import num, parse_report


def perfetto_trace(path: str | Path):  # noqa: ANN201 - a perfetto.protos.Trace
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    tr = pb.Trace()
    tr.ParseFromString(Path(path).read_bytes())
    return tr


@dataclass
class PerfettoTracks:
    """What a Perfetto trace holds, by track: descriptors, counter values, instants."""

    descriptors: dict[int, object] = field(default_factory=dict)
    counters: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    instants: dict[int, list[object]] = field(default_factory=dict)  # TracePacket

    def by_name(self, parent: int, name: str) -> int:
        (uuid,) = [u for u, d in self.descriptors.items() if d.parent_uuid == parent and d.name == name]
        return uuid

    def processes(self) -> dict[int, int]:
        """pid -> process track uuid."""
        return {d.process.pid: u for u, d in self.descriptors.items() if d.HasField("process")}


def perfetto_tracks(path: str | Path) -> PerfettoTracks:
    """Read a .pftrace and check what trace_processor needs of it: one trusted sequence whose first
    packet clears the incremental state, unique track uuids, every event on a described track,
    counter values only on counter tracks (unit bytes), instants only on the others."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    tr = perfetto_trace(path)
    out = PerfettoTracks()
    assert tr.packet, "no packets"
    assert tr.packet[0].sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    for pk in tr.packet:
        assert pk.trusted_packet_sequence_id == tr.packet[0].trusted_packet_sequence_id != 0
        if pk.HasField("track_descriptor"):
            d = pk.track_descriptor
            assert d.uuid not in out.descriptors, d
            out.descriptors[d.uuid] = d
            if d.HasField("counter"):
                assert d.counter.unit == pb.CounterDescriptor.UNIT_SIZE_BYTES
        elif pk.HasField("track_event"):
            e = pk.track_event
            d = out.descriptors[e.track_uuid]  # described before its events
            assert pk.timestamp > 0
            if e.type == pb.TrackEvent.TYPE_COUNTER:
                assert d.HasField("counter")
                out.counters.setdefault(e.track_uuid, []).append((pk.timestamp, e.counter_value))
            else:
                assert e.type == pb.TrackEvent.TYPE_INSTANT and not d.HasField("counter") and e.name
                out.instants.setdefault(e.track_uuid, []).append(pk)
        else:
            raise AssertionError(f"unexpected packet {pk}")
    for d in out.descriptors.values():
        assert d.HasField("process") or d.parent_uuid in out.descriptors
    return out


def annotations(pk) -> dict[str, object]:  # noqa: ANN001
    """The debug annotations of an instant's packet, by name."""
    out = {}
    for a in pk.track_event.debug_annotations:
        out[a.name] = getattr(a, a.WhichOneof("value"))
    return out


def as_of(points: list[tuple[int, int]], ts: int) -> int:
    """A counter's value at ``ts`` (its last point at or before it; 0 before the first)."""
    t = np.array([p[0] for p in points], dtype=np.int64)
    j = int(np.searchsorted(t, ts, side="right")) - 1
    return points[j][1] if j >= 0 else 0


@dataclass
class RawProfile:
    """``go tool pprof -raw``: the sample types, each sample's values and its locations' functions."""

    types: list[str]
    default: str | None
    samples: list[tuple[list[int], list[str]]]  # values, function of each location (leaf first; "" unnamed)
    mappings: list[str]


def go_pprof_raw(path: str | Path, home: Path) -> RawProfile:
    """Read a pprof profile with ``go tool pprof -raw`` (pytest fails in CI without go, skips elsewhere)."""
    if shutil.which("go") is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed (make system-deps installs golang-go, whose go tool pprof reads profiles)")
        pytest.skip("go is not installed (apt-get install golang-go)")
    assert gzip.decompress(Path(path).read_bytes())  # a gzip stream, as pprof writes them
    r = subprocess.run(["go", "tool", "pprof", "-raw", str(path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": str(home), "GOCACHE": str(home / "gocache")}, check=False)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    head, rest = text.split("Samples:\n", 1)
    samples_part, rest = rest.split("Locations\n", 1)
    locations_part, mappings_part = rest.split("Mappings\n", 1)
    lines = samples_part.strip("\n").split("\n")
    types = lines[0].split()
    default = next((t.replace("[dflt]", "") for t in types if t.endswith("[dflt]")), None)
    types = [t.replace("[dflt]", "") for t in types]
    funcs: dict[int, str] = {}
    for line in locations_part.split("\n"):
        m = re.match(r"\s*(\d+): 0x[0-9a-f]+ M=\d+ ?(\S*)", line)
        if m:
            funcs[int(m.group(1))] = m.group(2)
    samples = []
    for line in lines[1:]:
        values, _, locs = line.partition(":")
        samples.append(([int(v) for v in values.split()], [funcs[int(x)] for x in locs.split()]))
    return RawProfile(types, default, samples, [ln for ln in mappings_part.split("\n") if ln.strip()])


def site_truth(report: str) -> dict[str, dict[str, int]]:
    """The ``HL site`` lines of workloads/sites: name -> allocs, bytes, live, live_bytes, freed_chunks."""
    return {s["name"]: {k: num(v) for k, v in s.items() if k != "name"} for s in parse_report(report).all("site")}
