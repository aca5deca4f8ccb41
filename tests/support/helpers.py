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

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "workloads" / "bin"
HEAPLINE = [sys.executable, "-m", "tracer.cli"]
LINE = re.compile(r"^HL ([a-z_]+)(?: ([a-z]+))?((?: [a-z_]+=[0-9a-z_-]+)*)$")


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


def record_attached(cmd: list[str], trace: str, *args: str, before=None) -> str:  # noqa: ANN001
    """Start ``cmd`` (a workload with --wait), attach ``heapline record -p`` to it once it is ready
    (after ``before(pid)``, if given), let it run to the end; return everything the workload printed."""
    prog = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        out = ""
        while "HL ready" not in out:
            line = prog.stdout.readline()
            assert line, f"workload ended early: {out}"
            out += line
        if before is not None:
            before(prog.pid)
        rec = subprocess.Popen([*HEAPLINE, "record", *args, "-o", trace, "-p", str(prog.pid)], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
        err = ""
        while "recording:" not in err:
            line = rec.stderr.readline()
            assert line, f"recorder ended early: {err}"
            err += line
        prog.stdin.write("g")
        prog.stdin.flush()
        out += prog.stdout.read()
        assert prog.wait(timeout=60) == 0
        assert rec.wait(timeout=60) == 0, rec.stderr.read()
        return out
    finally:
        prog.kill()
