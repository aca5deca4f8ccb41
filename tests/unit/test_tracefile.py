"""The trace file: round trip, readers that are not ours, damage and foreign files."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pyarrow.feather as feather
import pytest
from helpers import run_heapline

from tracer.errors import TraceFileError
from tracer.events import EVENT_DTYPE, Kind
from tracer.tracefile import TraceWriter, open_trace


def sample(n: int, t0: int = 1000) -> np.ndarray:
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["ts"] = t0 + np.arange(n) * 10
    ev["pid"] = 42
    ev["tid"] = 42
    ev["kind"] = np.where(np.arange(n) % 2, Kind.MMAP, Kind.MUNMAP)
    ev["a0"] = 0x7F0000000000 + np.arange(n) * 4096
    ev["a1"] = 4096
    ev["a4"] = np.uint64(0xFFFFFFFFFFFFFFFF)
    ev["ret"] = -12
    return ev


def write(path: str, batches: list[np.ndarray], finish: bool = True) -> None:
    w = TraceWriter(path)
    w.start({"pid": 42, "command": ["x"], "attached": False})
    for b in batches:
        w.write(b)
    if finish:
        w.close({"exit_code": 0})


def test_round_trip_keeps_every_field(tmp_path) -> None:
    p = str(tmp_path / "t.trace")
    a, b = sample(1000), sample(500, t0=10**9)
    write(p, [b, a])  # arrival order differs from time order
    t = open_trace(p)
    assert t.complete and t.end == {"exit_code": 0} and t.header["pid"] == 42
    both = np.concatenate([a, b])
    assert np.array_equal(t.events, both)


def test_readable_without_heapline(tmp_path) -> None:
    p = str(tmp_path / "t.trace")
    write(p, [sample(10)])
    df = pd.read_feather(p)
    assert list(df["kind"].astype(str)[:2]) == ["munmap", "mmap"]
    assert df["a4"].iloc[0] == 0xFFFFFFFFFFFFFFFF and df["ret"].iloc[0] == -12
    assert b"heapline" in feather.read_table(p).schema.metadata


def test_truncated_trace_is_recovered(tmp_path) -> None:
    p = str(tmp_path / "t.trace")
    pid = os.fork()
    if pid == 0:  # a writer killed with SIGKILL: no footer, no end record, no destructor
        write(p, [sample(100), sample(100, t0=5000), sample(100, t0=9000)], finish=False)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    t = open_trace(p)
    assert not t.complete and len(t.events) == 300 and t.notes
    # cut into the last batch: the complete batches before it survive
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 50)
    t = open_trace(p)
    assert not t.complete and len(t.events) == 200


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world, not a trace", b"ARROW1\x00\x00garbage" * 3, b'{"json": true}'],
)
def test_foreign_or_damaged_files_give_one_sentence(tmp_path, content: bytes) -> None:
    p = tmp_path / "bad.trace"
    p.write_bytes(content)
    with pytest.raises(TraceFileError):
        open_trace(str(p))
    r = run_heapline("summary", str(p))
    assert r.returncode == 65
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_arrow_file_that_is_not_ours(tmp_path) -> None:
    p = str(tmp_path / "other.feather")
    pd.DataFrame({"x": [1, 2]}).to_feather(p)
    with pytest.raises(TraceFileError, match="no heapline header"):
        open_trace(p)


def test_missing_file_and_directory(tmp_path) -> None:
    r = run_heapline("summary", str(tmp_path / "nope.trace"))
    assert r.returncode == 65 and "no such trace file" in r.stderr
    r = run_heapline("summary", str(tmp_path))
    assert r.returncode == 65 and "directory" in r.stderr


@pytest.mark.parametrize("code", [0, 7, 62, 63, 64, 1000, 65535])
def test_an_event_of_no_kind_is_not_written(code: int) -> None:
    from tracer.tracefile import arrow_schema, to_batch

    ev = np.zeros(3, dtype=EVENT_DTYPE)
    ev["kind"] = [Kind.MALLOC, code, Kind.BRK]
    with pytest.raises(ValueError, match=f"unknown event kind in \\[{code}\\]"):
        to_batch(ev, arrow_schema())
    ev["kind"][1] = Kind.DELETE
    assert to_batch(ev, arrow_schema()).column("kind").to_pylist() == ["malloc", "delete", "brk"]
