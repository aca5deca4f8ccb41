"""Humanized units, used only at the edges (CLI, HTML)."""

from __future__ import annotations

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    sign = "-" if n < 0 else ""
    v = float(abs(n))
    for unit in _BYTE_UNITS:
        if v < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{sign}{int(v)} {unit}" if unit == "B" else f"{sign}{v:.1f} {unit}"
        v /= 1024
    raise AssertionError


def human_ns(ns: float) -> str:
    v = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{int(v)} ns"


def human_rate(per_s: float) -> str:
    for unit, scale in (("M/s", 1e6), ("k/s", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.1f} {unit}"
    return f"{per_s:.0f}/s"
