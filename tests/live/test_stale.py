"""Uprobe definitions of killed heapline recorders are removed; other tools' are kept."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import needs_root

from tracer.record.backends.bpf import stale

EVENTS = Path("/sys/kernel/tracing/uprobe_events")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@needs_root
@pytest.mark.skipif(not EVENTS.exists(), reason="tracefs is not mounted")
def test_only_dead_heapline_definitions_are_removed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stale, "REGISTRY", tmp_path / "registry")
    ours, theirs = _dead_pid(), _dead_pid()
    stale.register(ours)  # a heapline recorder that was SIGKILLed
    target = "/bin/true"
    # bcc's fallback naming, and heapline's own (tracer/record/backends/bpf/uprobes.py)
    mine = [("uprobes", f"p_heapline_test_bcc_{ours}"), ("heapline", f"malloc_{ours}_1")]
    other = [("uprobes", f"p_heapline_test_bcc_{theirs}"), ("heapline", f"malloc_{theirs}_1")]  # not registered
    for group, name in mine + other:
        stale.write_event(EVENTS, f"p:{group}/{name} {target}:0x1000")
    try:
        removed = stale.clean()
        text = EVENTS.read_text()
        assert sorted(removed) == sorted(name for _, name in mine)
        assert all(name not in text for _, name in mine) and all(name in text for _, name in other)
        assert not (tmp_path / "registry" / str(ours)).exists()
    finally:
        for group, name in mine + other:
            try:
                stale.write_event(EVENTS, f"-:{group}/{name}")
            except OSError:
                pass


def test_a_live_recorder_is_not_dead(tmp_path, monkeypatch) -> None:
    import os

    monkeypatch.setattr(stale, "REGISTRY", tmp_path)
    stale.register(os.getpid())
    assert stale.dead_recorders() == set()
