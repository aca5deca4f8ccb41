"""Process tracks as a Perfetto trace (``.pftrace``: a ``perfetto.protos.Trace``), for ui.perfetto.dev
or trace_processor.

Each process is a process track (``TrackDescriptor.process``); under it each counter is a counter
track (``TrackDescriptor.counter``, unit bytes) whose values are ``TrackEvent`` s of
``TYPE_COUNTER``, and the memory calls and the findings are two tracks of ``TYPE_INSTANT`` events
with their details as debug annotations. Every packet is on one trusted sequence whose first packet
clears the incremental state; nothing is interned. Timestamps are the trace's own (ns), on
Perfetto's default clock.

Field numbers (protos/perfetto/trace/): Trace.packet 1; TracePacket timestamp 8,
trusted_packet_sequence_id 10, track_event 11, sequence_flags 13, track_descriptor 60;
TrackDescriptor uuid 1, name 2, process 3, parent_uuid 5, counter 8, description 14;
ProcessDescriptor pid 1, cmdline 2, process_name 6; CounterDescriptor unit 3 (UNIT_SIZE_BYTES 3);
TrackEvent debug_annotations 4, type 9 (TYPE_INSTANT 3, TYPE_COUNTER 4), track_uuid 11,
categories 22, name 23, counter_value 30; DebugAnnotation bool_value 2, int_value 4,
double_value 5, string_value 6, name 10.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tracer.analysis.export import wire
from tracer.analysis.export.tracks import Arg, Instant, ProcessTracks

SEQUENCE = 1
SEQ_INCREMENTAL_STATE_CLEARED = 1
TYPE_INSTANT, TYPE_COUNTER = 3, 4
UNIT_SIZE_BYTES = 3


def _packet(body: bytes, ts: int | None = None, first: bool = False) -> bytes:
    p = (wire.uint(8, ts) if ts is not None else b"") + wire.uint(10, SEQUENCE) + body
    if first:
        p += wire.uint(13, SEQ_INCREMENTAL_STATE_CLEARED)
    return wire.length_delimited(1, p)


def _descriptor(uuid: int, name: str, parent: int | None = None, process: bytes | None = None,
                counter: bool = False, description: str = "") -> bytes:
    d = wire.uint(1, uuid) + wire.string(2, name)
    if process is not None:
        d += wire.length_delimited(3, process)
    if parent is not None:
        d += wire.uint(5, parent)
    if counter:
        d += wire.length_delimited(8, wire.uint(3, UNIT_SIZE_BYTES))
    if description:
        d += wire.string(14, description)
    return wire.length_delimited(60, d)


def _annotation(name: str, value: Arg) -> bytes:
    a = wire.string(10, name)
    if isinstance(value, bool):
        a += wire.uint(2, value)
    elif isinstance(value, int):
        a += wire.uint(4, value)
    elif isinstance(value, float):
        a += wire.double(5, value)
    else:
        a += wire.string(6, str(value))
    return wire.length_delimited(4, a)


def _instant(track: int, category: str, e: Instant) -> bytes:
    body = wire.uint(9, TYPE_INSTANT) + wire.uint(11, track) + wire.string(22, category) + wire.string(23, e.name)
    body += b"".join(_annotation(k, v) for k, v in e.args.items())
    return _packet(wire.length_delimited(11, body), e.ts)


def uuids(pid: int) -> Iterator[int]:
    """The track uuids of one process: its process track first, then its child tracks."""
    base = (pid + 1) << 16
    yield from range(base, base + (1 << 16))


def packets(processes: Sequence[ProcessTracks]) -> Iterator[bytes]:
    """The trace's packets, each as a ``Trace.packet`` field."""
    first = True
    for p in processes:
        ids = uuids(p.pid)
        proc = next(ids)
        pd = wire.uint(1, p.pid) + b"".join(wire.string(2, a) for a in p.cmdline)
        if p.name:
            pd += wire.string(6, p.name)
        yield _packet(_descriptor(proc, p.name or f"pid {p.pid}", process=pd), first=first)
        first = False
        for c in p.counters:
            track = next(ids)
            yield _packet(_descriptor(track, c.name, parent=proc, counter=True, description=c.description))
            head = wire.uint(9, TYPE_COUNTER) + wire.uint(11, track)
            for t, v in zip(c.ts.tolist(), c.values.tolist(), strict=True):
                yield _packet(wire.length_delimited(11, head + wire.uint(30, v)), t)
        for name, category, events in (("memory calls", "memory_call", p.calls), ("findings", "finding", p.findings)):
            if not events:
                continue
            track = next(ids)
            yield _packet(_descriptor(track, name, parent=proc))
            for e in events:
                yield _instant(track, category, e)


def encode(processes: Sequence[ProcessTracks]) -> bytes:
    """The whole ``.pftrace`` file."""
    return b"".join(packets(processes))
