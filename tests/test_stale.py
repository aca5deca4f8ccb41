"""Uprobe definitions of killed heapline recorders are removed; other tools' are kept."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import needs_root

from tracer import stale

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
    mine = f"p_heapline_test_bcc_{ours}"
    other = f"p_heapline_test_bcc_{theirs}"  # same naming, another tool's: not registered
    stale.write_event(EVENTS, f"p:uprobes/{mine} {target}:0x1000")
    stale.write_event(EVENTS, f"p:uprobes/{other} {target}:0x1000")
    try:
        removed = stale.clean()
        text = EVENTS.read_text()
        assert removed == [mine]
        assert mine not in text and other in text
        assert not (tmp_path / "registry" / str(ours)).exists()
    finally:
        for name in (mine, other):
            try:
                stale.write_event(EVENTS, f"-:uprobes/{name}")
            except OSError:
                pass


def test_a_live_recorder_is_not_dead(tmp_path, monkeypatch) -> None:
    import os

    monkeypatch.setattr(stale, "REGISTRY", tmp_path)
    stale.register(os.getpid())
    assert stale.dead_recorders() == set()
