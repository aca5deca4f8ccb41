"""What a reading command may take (tracer.memavail) and the sentence a trace too large for it gets."""

from __future__ import annotations

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from tracer import memavail, tracefile
from tracer.errors import Exit, TooBig

TRACE = str(ROOT / "traces" / "phases.trace")
KIB = 1024


def fake(tmp_path, meminfo: str, cgroup: str, files: dict[str, str]):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(meminfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "status").write_text("VmSize:\t  1000 kB\n")
    for name, text in files.items():
        (cg / name).parent.mkdir(parents=True, exist_ok=True)
        (cg / name).write_text(text)
    return proc, cg


def test_the_machine_alone(tmp_path) -> None:
    proc, cg = fake(tmp_path, "MemTotal: 9000 kB\nMemAvailable:    5000 kB\nSwapFree: 24 kB\n", "0::/\n", {})
    assert memavail.available(proc, cg) == 5024 * KIB


def test_the_tightest_cgroup_on_the_way_up_v2(tmp_path) -> None:
    proc, cg = fake(tmp_path, "MemAvailable: 9000000 kB\n", "0::/a/b\n", {
        "a/b/memory.max": "5000000\n", "a/b/memory.current": "1000000\n", "a/b/memory.stat": "inactive_file 100\n",
        "a/memory.max": "3000000\n", "a/memory.current": "2900000\n", "a/memory.stat": "anon 5\ninactive_file 7\n",
        "memory.max": "max\n", "memory.current": "99999999\n",  # the root: no limit
    })
    assert memavail.available(proc, cg) == 100_007


def test_a_v1_memory_cgroup_beside_other_controllers(tmp_path) -> None:
    proc, cg = fake(tmp_path, "MemAvailable: 9000000 kB\n", "5:cpu,cpuacct:/x\n4:memory:/job/7\n0::/\n", {
        "memory/job/7/memory.limit_in_bytes": "400000000\n", "memory/job/7/memory.usage_in_bytes": "350000000\n",
        "memory/job/7/memory.stat": "cache 20\ntotal_inactive_file 1000\n",
        "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "1\n",
    })
    assert memavail.available(proc, cg) == 50_001_000


def test_nothing_known_is_no_limit(tmp_path) -> None:
    proc, cg = tmp_path / "none", tmp_path / "none2"
    assert memavail._meminfo(proc) == memavail._cgroup(proc, cg) == memavail.UNLIMITED


def test_a_trace_larger_than_the_room_is_refused_before_it_is_read(monkeypatch) -> None:
    rows = len(tracefile.open_trace(TRACE))
    need = tracefile.Need("a summary", 100)
    want = rows * (tracefile.EVENT_DTYPE.itemsize + 100)
    monkeypatch.setattr(memavail, "available", lambda: want - 1)
    with pytest.raises(TooBig) as e:
        tracefile.open_trace(TRACE, need)
    assert e.value.code == Exit.NO_MEMORY == 69
    assert f"holds {rows:,} events: a summary needs about" in e.value.message
    monkeypatch.setattr(memavail, "available", lambda: want)
    assert len(tracefile.open_trace(TRACE, need)) == rows


@pytest.mark.parametrize("verb", [["summary"], ["explain"], ["report", "-o", "OUT"], ["export", "--perfetto", "OUT"]])
def test_each_reading_command_says_it_in_one_sentence(monkeypatch, tmp_path, verb: list[str]) -> None:
    from tracer.cli import app

    monkeypatch.setattr(memavail, "available", lambda: 10 * KIB)
    args = [a if a != "OUT" else str(tmp_path / "r.html") for a in verb]
    r = CliRunner().invoke(app, [args[0], TRACE, *args[1:]])
    assert r.exit_code == 69, r.output
    assert "of memory and this process can get 10 KiB" in r.output
    assert not (tmp_path / "r.html").exists()


def test_running_out_later_is_the_same_exit(monkeypatch) -> None:
    from tracer.analysis import summary
    from tracer.cli import app

    def exhausted(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(summary, "summarize", exhausted)
    monkeypatch.setattr("tracer.commands.summary.summarize", exhausted)
    r = CliRunner().invoke(app, ["summary", TRACE])
    assert r.exit_code == 69 and "ran out of memory" in r.output and "Traceback" not in r.output
