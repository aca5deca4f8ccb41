"""The preload library and its ring, without eBPF (no root): a workload run with the library
preloaded and a ring made by preload.py, drained as the backend drains it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, workload

from tracer.events import Kind
from tracer.record.backends.bpf import preload

LIBRARY = preload.library_path(ROOT / "probes")
pytestmark = pytest.mark.skipif(not LIBRARY.is_file(), reason="the preload library is not built (make)")


def run(ring: preload.PreloadRing, cmd: list[str], drain_while: bool = False) -> tuple[str, list]:
    env = ring.env(LIBRARY, dict(os.environ))
    got: list = []
    done = threading.Event()

    def drainer() -> None:
        while not done.is_set():
            got.append(ring.drain())
            time.sleep(0.005)

    t = threading.Thread(target=drainer)
    if drain_while:
        t.start()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        done.set()
        if drain_while:
            t.join()
    assert p.returncode == 0, p.stderr
    got.append(ring.drain(final=True))
    return p.stdout, got


def events(parts: list) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in ("kind", "pid", "tid", "a0", "ts", "ret")}


def test_every_call_of_the_churn_is_recorded_on_the_monotonic_clock() -> None:
    ring = preload.PreloadRing(1 << 16, block=False)
    try:
        out, parts = run(ring, [workload("malloc_churn"), "20000"], drain_while=True)
        ev = events(parts)
        pid = int(out.split("HL pid pid=")[1].split()[0])
        mallocs = (ev["kind"] == Kind.MALLOC) & (ev["a0"] == 64)
        assert mallocs.sum() >= 20000 and ((ev["kind"] == Kind.FREE).sum() >= 20000)
        assert ring.lost() == 0
        assert set(ev["pid"][mallocs].tolist()) == {pid}
        # CLOCK_MONOTONIC, as time.monotonic_ns and bpf_ktime_get_ns read it
        assert 0 < int(ev["ts"].max()) <= time.monotonic_ns()
    finally:
        ring.close()


def test_a_full_ring_counts_what_it_could_not_take() -> None:
    ring = preload.PreloadRing(1024, block=False)
    try:
        _, parts = run(ring, [workload("malloc_churn"), "5000"])  # nothing drains until the end
        taken = sum(len(p) for p in parts)
        assert taken == 1024
        full, _ = ring.counters()
        assert full >= 2 * 5000 - 1024 and ring.lost() == full
    finally:
        ring.close()


def test_a_blocking_ring_loses_nothing() -> None:
    ring = preload.PreloadRing(1024, block=True)
    try:
        _, parts = run(ring, [workload("malloc_churn"), "50000"], drain_while=True)
        ev = events(parts)
        assert ring.lost() == 0 and ring.counters()[1] > 0  # it had to wait, and lost nothing
        assert int(((ev["kind"] == Kind.MALLOC) & (ev["a0"] == 64)).sum()) >= 50000
    finally:
        ring.close()


def test_forked_children_write_under_their_own_pid() -> None:
    ring = preload.PreloadRing(1 << 16, block=False)
    try:
        _, parts = run(ring, [workload("forker")])
        ev = events(parts)
        assert len(set(ev["pid"].tolist())) >= 2
        for pid in set(ev["pid"].tolist()):  # each process's tids are its own (the main thread's is its pid)
            assert pid in set(ev["tid"][ev["pid"] == pid].tolist())
    finally:
        ring.close()


def test_without_a_ring_calls_pass_through_unrecorded(tmp_path: Path) -> None:
    env = {**os.environ, "LD_PRELOAD": str(LIBRARY), preload.ENV_RING: str(tmp_path / "missing")}
    p = subprocess.run([workload("alloc_calls")], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "HL done" in p.stdout, p.stderr
