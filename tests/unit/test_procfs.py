"""/proc readers: what they say when the kernel refuses."""

from __future__ import annotations

import pytest

from tracer.errors import Exit, HeaplineError
from tracer.record import procfs


def test_unreadable_maps_is_one_sentence(monkeypatch) -> None:
    """/proc/PID/maps of a process in another PID namespace (or under a stricter ptrace policy) is
    refused with EACCES: a sentence and its own exit code, not a traceback."""

    def refuse(path: str, *args: object, **kw: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(procfs, "open", refuse, raising=False)
    with pytest.raises(HeaplineError) as e:
        procfs.read_maps(1)
    assert e.value.code == Exit.NOT_PERMITTED and "/proc/1/maps" in e.value.message


def test_live_task_of_this_process() -> None:
    import os

    assert procfs.live_task(os.getpid()) == os.getpid()
    assert procfs.alive(os.getpid())
    with pytest.raises(procfs.ProcessGone):
        procfs.live_task(4194304)
