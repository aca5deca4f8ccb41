"""glibc's mmap threshold, trim threshold and top pad in force over time (glibc 2.36, 64-bit).

They start at their defaults (128 KiB, 128 KiB, 128 KiB), or at what the environment set
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``GLIBC_TUNABLES``
``glibc.malloc.*``), change with each successful ``mallopt``, and rise by themselves when ``free``
returns an mmapped chunk larger than the mmap threshold and smaller than 32 MiB (``DEFAULT_MMAP_THRESHOLD_MAX``;
glibc compares the size field with its IS_MMAPPED bit set, so a chunk of exactly 32 MiB does not count):
mmap threshold = that chunk's size, trim threshold = twice it. Setting any of the four by
``mallopt``, environment or tunable turns that rise off for good (``mp_.no_dyn_threshold``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from tracer.analysis.chunks import NEVER, Blocks
from tracer.columns import Events
from tracer.decode import M_MMAP_MAX, M_MMAP_THRESHOLD, M_TOP_PAD, M_TRIM_THRESHOLD, MALLOPT_PARAMS
from tracer.events import Kind
from tracer.fields import mallopt

KIB = 1024
DEFAULT_MMAP = 128 * KIB
DEFAULT_TRIM = 128 * KIB
DEFAULT_TOP_PAD = 128 * KIB
MMAP_THRESHOLD_MAX = 32 << 20
_PARAM = {M_TRIM_THRESHOLD: "trim", M_TOP_PAD: "top_pad", M_MMAP_THRESHOLD: "mmap", M_MMAP_MAX: None}
_ENV = {"MALLOC_TRIM_THRESHOLD_": "trim", "MALLOC_TOP_PAD_": "top_pad", "MALLOC_MMAP_THRESHOLD_": "mmap",
        "MALLOC_MMAP_MAX_": None}
_TUNABLE = {"trim_threshold": "trim", "top_pad": "top_pad", "mmap_threshold": "mmap", "mmap_max": None}


@dataclass(frozen=True)
class Thresholds:
    ts: int  # from when (ns)
    mmap: int
    trim: int
    top_pad: int
    source: str  # what set them last: "default", an environment variable, "GLIBC_TUNABLES", "mallopt(M_...)",
    # or "dynamic (free of a N-byte mmapped chunk)"
    dynamic: bool  # whether glibc still raises them by itself

    def to_json(self) -> dict:
        return {"mmap": self.mmap, "trim": self.trim, "top_pad": self.top_pad, "source": self.source,
                "dynamic": self.dynamic}


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def initial(env: dict[str, str], t0: int) -> Thresholds:
    th = Thresholds(t0, DEFAULT_MMAP, DEFAULT_TRIM, DEFAULT_TOP_PAD, "default", True)
    sets: dict[str, int] = {}
    source = ""
    for name, field in _ENV.items():
        if name in env and (v := _int(env[name])) is not None:
            sets[field or ""], source = v, name
    for name, value in re.findall(r"glibc\.malloc\.(\w+)=(\w+)", env.get("GLIBC_TUNABLES", "")):
        if name in _TUNABLE and (v := _int(value)) is not None:
            sets[_TUNABLE[name] or ""], source = v, "GLIBC_TUNABLES"
    if sets:
        fields = {k: v for k, v in sets.items() if k}
        th = replace(th, **fields, source=source, dynamic=False)
    return th


def history(ev: Events, b: Blocks, env: dict[str, str], t0: int) -> list[Thresholds]:
    """The thresholds from the start, then after every change, in time order."""
    out = [initial(env, t0)]
    k = np.ascontiguousarray(ev["kind"])
    opts = np.flatnonzero((k == Kind.MALLOPT) & (ev["ret"] == 1))
    freed = np.flatnonzero(b.mmapped & (b.closed != NEVER) & (b.close_kind != Kind.REALLOC))
    items = sorted([(int(ev["ts"][i]), 0, i) for i in opts.tolist()] +
                   [(int(b.closed[i]), 1, i) for i in freed.tolist()])
    for ts, what, i in items:
        th = out[-1]
        if what == 0:
            param, value = int(mallopt.param(ev)[i]), int(mallopt.value(ev)[i])
            if param not in _PARAM:
                continue
            field = _PARAM[param]
            changed = {field: value} if field else {}
            out.append(replace(th, ts=ts, **changed, source=f"mallopt({MALLOPT_PARAMS[param]})", dynamic=False))
        else:
            size = int(b.chunk[i])
            # glibc compares the size with its IS_MMAPPED bit set: a chunk of exactly 32 MiB does not count
            if th.dynamic and th.mmap < size < MMAP_THRESHOLD_MAX:
                out.append(replace(th, ts=ts, mmap=size, trim=2 * size,
                                   source=f"dynamic (free of a {size}-byte mmapped chunk)"))
    return out


def at(hist: list[Thresholds], ts: int) -> Thresholds:
    """The thresholds in force at ``ts``."""
    cur = hist[0]
    for th in hist:
        if th.ts > ts:
            break
        cur = th
    return cur
