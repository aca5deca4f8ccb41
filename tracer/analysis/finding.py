"""One finding: a stable code, one sentence, evidence a user can check, and the moment it is about."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tracer.units import human_bytes

KIB = 1024


@dataclass
class Finding:
    code: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    ts: int | None = None  # absolute ns of the moment it is about

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kib(n: float) -> str:
    """Bytes in a sentence: the rule of every output (:func:`tracer.units.human_bytes`)."""
    return human_bytes(n)


def rel_s(ts: int, t0: int) -> float:
    """Seconds from the start of the recording."""
    return round((ts - t0) / 1e9, 6)
