"""Shared helpers: the workloads' own reports, and running heapline as a user would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "workloads" / "bin"
HEAPLINE = [sys.executable, "-m", "tracer.cli"]
LINE = re.compile(r"^HL ([a-z_]+)(?: ([a-z]+))?((?: [a-z_]+=[0-9a-z-]+)*)$")


@dataclass
class Report:
    """What a workload printed about itself."""

    lines: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def all(self, verb: str) -> list[dict[str, str]]:
        return [kv for v, kv in self.lines if v == verb]

    def brk(self, phase: str) -> int:
        (kv,) = [kv for kv in self.all("brk") if kv["phase"] == phase]
        return int(kv["sbrk"], 16)


def parse_report(text: str) -> Report:
    rep = Report()
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        kv = dict(part.split("=", 1) for part in m.group(3).split())
        if m.group(2):  # HL marker start ptr=...
            kv["which"] = m.group(2)
        rep.lines.append((m.group(1), kv))
    return rep


def num(v: str) -> int:
    return int(v, 16) if v.startswith("0x") else int(v)


def workload(name: str) -> str:
    path = BIN / name
    if not path.exists():
        subprocess.run(["make", "-s", "-C", str(ROOT / "workloads")], check=True)
    return str(path)


def run_heapline(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*HEAPLINE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="recording needs root (CI runs as root)")
needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
