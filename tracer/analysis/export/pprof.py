"""Figures by allocation site as a pprof profile (``perftools.profiles.Profile``, gzipped), for
``go tool pprof`` or ``pprof``.

One sample per recorded stack, its values in the order of
:data:`tracer.analysis.sites.SAMPLE_TYPES` (``inuse_space`` shown by default); one location
per distinct frame (its runtime address, the module as its mapping, the symbol as its function).
A module's mapping starts at its load base as the frames give it (address - file offset), so that
a frame's file offset is ``address - memory_start``. Frames without a module or a symbol keep
their address alone, as pprof shows unsymbolized code.

Field numbers (profile.proto): Profile sample_type 1, sample 2, mapping 3, location 4, function 5,
string_table 6, time_nanos 9, duration_nanos 10, period_type 11, period 12, comment 13,
default_sample_type 14; ValueType type 1, unit 2; Sample location_id 1, value 2; Mapping id 1,
memory_start 2, memory_limit 3, file_offset 4, filename 5, build_id 6, has_functions 7;
Location id 1, mapping_id 2, address 3, line 4; Line function_id 1; Function id 1, name 2,
system_name 3, filename 4.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

from tracer.analysis.export import wire
from tracer.analysis.sites import Frame, SiteFigures

NO_STACK = "(no stack recorded)"


class _Strings:
    """The string table: index 0 is the empty string."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str | None) -> int:
        return self.index.setdefault(s or "", len(self.index))


def profile(figures: SiteFigures, sample_types: Sequence[tuple[str, str]], default: str = "inuse_space",
            comments: Sequence[str] = (), time_ns: int = 0, duration_ns: int = 0) -> bytes:
    """The serialized (not yet gzipped) Profile."""
    s = _Strings()
    out = bytearray()
    for t, u in sample_types:
        out += wire.length_delimited(1, wire.uint(1, s(t)) + wire.uint(2, s(u)))

    mappings: dict[str, tuple[int, int, int, str | None]] = {}  # path -> id, start, limit, build id
    for fr in (f for stack in figures.stacks.values() for f in stack):
        if fr.module is None or fr.offset is None:
            continue
        base = fr.address - fr.offset
        mid, lo, hi, bid = mappings.get(fr.module, (len(mappings) + 1, base, fr.address + 1, fr.build_id))
        mappings[fr.module] = (mid, min(lo, base), max(hi, fr.address + 1), bid)

    functions: dict[tuple[str, str | None], int] = {}
    locations: dict[tuple[int, str | None], int] = {}
    body = bytearray()

    def function(name: str, module: str | None) -> int:
        if (name, module) not in functions:
            fid = functions[(name, module)] = len(functions) + 1
            body.extend(wire.length_delimited(5, wire.uint(1, fid) + wire.uint(2, s(name)) + wire.uint(3, s(name))
                                              + wire.uint(4, s(module))))
        return functions[(name, module)]

    def location(fr: Frame | None) -> int:
        k = (fr.address, fr.module) if fr is not None else (0, None)
        if k not in locations:
            lid = locations[k] = len(locations) + 1
            loc = wire.uint(1, lid)
            if fr is None:
                loc += wire.length_delimited(4, wire.uint(1, function(NO_STACK, None)))
            else:
                if fr.module in mappings and fr.offset is not None:
                    loc += wire.uint(2, mappings[fr.module][0])
                loc += wire.uint(3, fr.address)
                if fr.function:
                    loc += wire.length_delimited(4, wire.uint(1, function(fr.function, fr.module)))
            body.extend(wire.length_delimited(4, loc))
        return locations[k]

    for sid, values in figures.values.items():
        stack = figures.stacks.get(sid) or []
        ids = [location(f) for f in stack] or [location(None)]
        out += wire.length_delimited(2, wire.packed(1, ids) + wire.packed(2, values))
    for path, (mid, lo, hi, bid) in mappings.items():
        out += wire.length_delimited(3, wire.uint(1, mid) + wire.uint(2, lo) + wire.uint(3, hi) + wire.uint(4, 0)
                                     + wire.uint(5, s(path)) + wire.uint(6, s(bid)) + wire.uint(7, 1))
    out += body
    for c in comments:
        s(c)
    if time_ns:
        out += wire.uint(9, time_ns)
    if duration_ns:
        out += wire.uint(10, duration_ns)
    out += wire.packed(13, [s(c) for c in comments]) if comments else b""
    out += wire.uint(14, s(default))
    strings = sorted(s.index.items(), key=lambda kv: kv[1])
    out += b"".join(wire.string(6, text) for text, _ in strings)
    return bytes(out)


def encode(figures: SiteFigures, sample_types: Sequence[tuple[str, str]], **options: object) -> bytes:
    """The ``.pb.gz`` file: :func:`profile` gzipped (deterministic: no name, no time in the header)."""
    return gzip.compress(profile(figures, sample_types, **options), mtime=0)  # type: ignore[arg-type]
