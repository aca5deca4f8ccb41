"""StraceParser on text captured from real strace 6.1 runs (tests/data/strace, see capture.sh)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tracer import decode
from tracer.events import EVENT_DTYPE, Kind
from tracer.record.backends.strace_parse import StraceParser, parse_seconds

DATA = Path(__file__).parents[1] / "data" / "strace"
MINUS1 = 0xFFFF_FFFF_FFFF_FFFF


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines(keepends=True)


def parse(name: str, **kw) -> tuple[StraceParser, np.ndarray]:
    parser = StraceParser(**kw)
    for line in lines(name):
        parser.feed(line)
    return parser, parser.flush()


def of_kind(events: np.ndarray, kind: Kind) -> np.ndarray:
    return events[events["kind"] == kind]


def first_ts(text: list[str]) -> int:
    m = re.match(r"\d+\s+(\d+)\.(\d+)", text[0])
    assert m
    return parse_seconds(m[1], m[2])


def assert_sorted(events: np.ndarray) -> None:
    assert np.all(np.diff(events["ts"].astype(np.int64)) >= 0)


def test_parse_seconds() -> None:
    assert parse_seconds("12", "5") == 12_500_000_000
    assert parse_seconds("12", "000001") == 12_000_001_000
    assert parse_seconds("12", "123456789") == 12_123_456_789


def test_calls_single_thread() -> None:
    text = lines("calls.raw.txt")
    offset = first_ts(text) - 1000
    parser, ev = parse("calls.raw.txt", clock_offset_ns=offset)
    assert parser.unparsed == 0 and parser.incomplete == 0
    assert ev.dtype == EVENT_DTYPE
    assert_sorted(ev)
    pid = int(text[0].split()[0])
    assert set(ev["pid"]) == {pid} and set(ev["tid"]) == {pid}
    # first the exec, at the first line's time converted to the monotonic clock
    assert ev[0]["kind"] == Kind.EXEC and ev[0]["a0"] == pid and ev[0]["ts"] == 1000
    assert ev[0]["dur"] > 0
    brk = of_kind(ev, Kind.BRK)
    assert brk[0]["a0"] == 0 and brk[0]["ret"] == 0x555555559000
    assert [int(b["a0"]) for b in brk[2:]] == [0x55555555C000, 0x55555555A000, 1]
    assert int(brk[-1]["ret"]) == 0x55555555A000  # brk below start_brk returns the current break
    mmap = of_kind(ev, Kind.MMAP)
    first = mmap[0]
    assert (first["a1"], first["a2"], first["a3"], first["a4"], first["a5"]) == (8192, 3, 0x22, MINUS1, 0)
    assert first["ret"] == 0x7FFFF7FC0000
    assert mmap[3]["a5"] == 0x26000 and mmap[3]["a4"] == 3
    huge = mmap[mmap["a3"] == 0x54040022]
    assert len(huge) == 1 and huge[0]["ret"] == -12
    assert of_kind(ev, Kind.MUNMAP)["ret"].tolist()[-3:] == [-22, 0, -22]
    mremap = of_kind(ev, Kind.MREMAP)
    fixed = mremap[mremap["a3"] == 3][0]
    assert fixed["a4"] == fixed["ret"] != 0
    assert all(m["a4"] == 0 for m in mremap if m["a3"] != 3)
    madv = of_kind(ev, Kind.MADVISE)
    assert {int(a) for a in madv["a2"]} >= decode.RELEASE_ADVICE
    assert madv[madv["a2"] == 9][0]["ret"] == -22
    exit_ = ev[-1]
    assert exit_["kind"] == Kind.EXIT and (exit_["a0"], exit_["a1"], exit_["a2"]) == (5, 1, 1)


def test_threads_unfinished_resumed_and_exits() -> None:
    text = lines("threads.raw.txt")
    parser, ev = parse("threads.raw.txt")
    assert parser.unparsed == 0
    assert_sorted(ev)
    leader = int(text[0].split()[0])
    assert set(ev["pid"]) == {leader}
    forks = of_kind(ev, Kind.FORK)
    assert len(forks) == 6 and all(forks["a2"] == 1) and all(forks["a1"] & decode.CLONE_THREAD)
    children = {int(c) for c in forks["a0"]}
    assert set(ev["tid"]) == children | {leader}
    exits = of_kind(ev, Kind.EXIT)
    assert len(exits) == 7 and exits[-1]["tid"] == leader
    assert exits["a2"].tolist() == [0] * 6 + [1]
    assert exits["a0"].tolist()[-3:] == [3, 3, 3]  # exit_group(3) ends the two busy threads too
    # each mmap/munmap started is one event, or an incomplete call (a thread killed mid-call)
    started = sum(bool(re.search(r"\d (mmap|munmap|madvise)\(", line)) for line in text)
    memory = np.isin(ev["kind"], [Kind.MMAP, Kind.MUNMAP, Kind.MADVISE]).sum()
    assert memory + parser.incomplete == started
    assert parser.incomplete >= 0 and parser.open_calls == 0


def test_split_call_keeps_entry_time_and_result() -> None:
    text = lines("threads.raw.txt")
    i = next(k for k, line in enumerate(text) if re.search(r" mmap\(NULL, 65536.*<unfinished \.\.\.>", line))
    tid, whole, frac = re.match(r"(\d+)\s+(\d+)\.(\d+)", text[i]).groups()
    resumed = next(line for line in text[i + 1 :] if line.startswith(tid) and "<... mmap resumed>" in line)
    ret = int(re.search(r"= (0x[0-9a-f]+)", resumed)[1], 16)
    dur = re.search(r"<(\d+)\.(\d+)>$", resumed.strip())
    _, ev = parse("threads.raw.txt")
    hit = ev[(ev["ts"] == parse_seconds(whole, frac)) & (ev["tid"] == int(tid))]
    assert len(hit) == 1 and hit[0]["kind"] == Kind.MMAP
    assert hit[0]["ret"] == ret and hit[0]["dur"] == parse_seconds(dur[1], dur[2])


def test_streaming_equals_one_shot_and_is_ordered() -> None:
    _, whole = parse("threads.raw.txt")
    parser = StraceParser()
    parts = []
    for line in lines("threads.raw.txt"):
        parser.feed(line)
        parts.append(parser.take())
    parts.append(parser.flush())
    streamed = np.concatenate(parts)
    assert np.array_equal(streamed, whole)
    assert_sorted(streamed)


def test_forks_signals_and_exec() -> None:
    text = lines("forks.raw.txt")
    parser, ev = parse("forks.raw.txt")
    assert parser.unparsed == 0 and parser.incomplete == 0
    parent = int(text[0].split()[0])
    forks = of_kind(ev, Kind.FORK)
    assert len(forks) == 7 and all(forks["a2"] == 0) and all(forks["pid"] == parent)
    children = [int(c) for c in forks["a0"]]
    assert forks["a1"].tolist()[:4] == [0x1200000] * 4  # glibc fork(): clone without the SIGCHLD byte
    assert forks["a1"].tolist()[4:] == [0x4100, 0, 0x4100]  # vfork(), raw fork, raw vfork
    for child in children:
        mine = ev[ev["tid"] == child]
        assert set(mine["pid"]) == {child}
        assert mine[-1]["kind"] == Kind.EXIT and mine[-1]["a2"] == 1
    exits = {int(e["tid"]): e for e in of_kind(ev, Kind.EXIT)}
    assert (exits[children[0]]["a0"], exits[children[0]]["a1"]) == (7, 1)
    assert (exits[children[1]]["a1"], exits[children[1]]["a3"]) == (0, 9)  # killed by SIGKILL
    assert (exits[children[2]]["a1"], exits[children[2]]["a3"]) == (0, 11)  # killed by SIGSEGV
    assert exits[children[6]]["a0"] == 9
    execs = of_kind(ev, Kind.EXEC)
    assert execs["pid"].tolist() == [parent, children[3], children[4]]  # the failed execve is no event
    assert ev[-1]["kind"] == Kind.EXIT and ev[-1]["pid"] == parent and ev[-1]["a2"] == 1
    # the vfork parent resumes after its child's exec started: the FORK still comes first
    vfork_child = children[4]
    assert np.flatnonzero(ev["kind"] == Kind.FORK)[4] < np.flatnonzero(ev["pid"] == vfork_child)[0]


def test_exec_from_a_thread() -> None:
    text = lines("thread_exec.raw.txt")
    parser, ev = parse("thread_exec.raw.txt")
    assert parser.unparsed == 0
    leader = int(text[0].split()[0])
    execer = int(re.search(r"superseded by execve in pid (\d+)", "".join(text))[1])
    assert set(ev["pid"]) == {leader}
    execs = of_kind(ev, Kind.EXEC)
    assert len(execs) == 2
    assert (execs[1]["pid"], execs[1]["tid"], execs[1]["a0"], execs[1]["ret"]) == (leader, leader, execer, 0)
    after = ev[ev["ts"] > execs[1]["ts"]]
    assert set(after[after["kind"] != Kind.EXIT]["tid"]) == {leader}  # the new image runs as the leader
    exits = of_kind(ev, Kind.EXIT)
    assert exits["a2"].tolist() == [0, 1] and exits[-1]["tid"] == leader


def test_killed_threads() -> None:
    _, ev = parse("killed.raw.txt")
    exits = of_kind(ev, Kind.EXIT)
    assert len(exits) == 3
    assert exits["a1"].tolist() == [0, 0, 0] and exits["a3"].tolist() == [15, 15, 15]
    assert exits["a2"].tolist() == [0, 0, 1]


def test_attach_with_known_threads() -> None:
    text = lines("attach.raw.txt")
    tids = sorted({int(line.split()[0]) for line in text})
    leader = tids[0]
    parser = StraceParser()
    for tid in tids:
        parser.add_task(tid, leader)
    assert parser.live_processes() == [leader]
    for line in text:
        parser.feed(line)
    ev = parser.flush()
    assert parser.unparsed == 0
    assert set(ev["pid"]) == {leader} and set(ev["tid"]) == set(tids)
    assert not len(of_kind(ev, Kind.EXIT))  # detached, not ended
    assert parser.live_processes() == [leader]
    # calls open when strace detached are counted, not invented
    opened = sum(" <unfinished ...>" in line for line in text)
    resumed = sum("resumed>" in line for line in text)
    assert parser.incomplete >= opened - resumed


def test_tgid_lookup_for_unknown_tasks() -> None:
    parser = StraceParser(tgid_of=lambda tid: 100 if tid == 101 else None)
    parser.feed("101   1000.000000001 munmap(0x1000, 4096) = 0 <0.000001>\n")
    parser.feed("102   1000.000000002 munmap(0x1000, 4096) = 0 <0.000001>\n")
    ev = parser.take()
    assert ev["pid"].tolist() == [100, 102] and ev["tid"].tolist() == [101, 102]


SYNTHETIC = """\
10    100.000000100 clone(child_stack=NULL, flags=0x1200000|17, child_tidptr=0x7f0 <unfinished ...>
11    100.000000200 mmap(NULL, 4096, 0x3, 0x22, -1, 0) = 0x7f0000000000 <0.000000010>
10    100.000000300 <... clone resumed>) = 11 <0.000000250>
11    100.000000400 +++ exited with 0 +++
10    100.000000500 mmap(NULL, 4096, 0x3, 0x22, -1, 0 <unfinished ...>
12    100.000000600 munmap(0x7f00, 4096 <detached ...>
10    100.000000700 <... mmap resumed>) = ? ERESTARTNOINTR (To be restarted)
10    100.000000800 <... brk resumed>) = 0x1000 <0.000001>
10    100.000000900 this is not strace output
not even a timestamp
10    100.000001000 frobnicate(1, 2) = 0 <0.000001>
"""


def test_child_reported_before_parent_clone_returns() -> None:
    parser = StraceParser()
    feed = SYNTHETIC.splitlines()
    parser.feed(feed[0])
    parser.feed(feed[1])
    assert len(parser.take()) == 0  # held: the open clone started earlier
    parser.feed(feed[2])
    parser.feed(feed[3])
    ev = parser.take()
    assert ev["kind"].tolist() == [Kind.FORK, Kind.MMAP, Kind.EXIT]
    assert ev["pid"].tolist() == [10, 11, 11]
    assert ev[0]["a0"] == 11 and ev[0]["a1"] == 0x1200000 and ev[0]["ts"] == 100_000_000_100
    assert ev[2]["a2"] == 1


def test_nothing_dropped_silently() -> None:
    parser = StraceParser()
    for line in SYNTHETIC.splitlines():
        parser.feed(line)
    parser.flush()
    # detached munmap, restarted mmap, resumed brk never seen starting
    assert parser.incomplete == 3
    assert parser.unparsed == 3
    assert parser.unparsed_lines[1] == "not even a timestamp"
    assert "frobnicate" in parser.unparsed_lines[2]


def test_lines_without_pid_and_microseconds() -> None:
    parser = StraceParser(clock_offset_ns=1_000_000_000, default_tid=42)
    parser.feed("1795679083.643502 mmap(NULL, 8192, 0x3, 0x22, -1, 0) = 0x7f2db5d13000 <0.000026>\n")
    parser.feed("1795679083.644217 exit_group(0)   = ?\n")
    parser.feed("1795679083.644300 +++ exited with 0 +++\n")
    ev = parser.flush()
    assert ev["tid"].tolist() == [42, 42] and ev["pid"].tolist() == [42, 42]
    assert ev[0]["ts"] == 1795679082_643502000 and ev[0]["dur"] == 26_000
    assert parser.unparsed == 0 and parser.incomplete == 0


def test_pid_changed_execve() -> None:
    parser = StraceParser()
    parser.add_task(20, 20)
    parser.add_task(21, 20)
    parser.feed('21    5.000000001 execve("/bin/true", ["true"], 0x7ff /* 1 var */ <pid changed to 20 ...>\n')
    parser.feed("20    5.000000009 <... execve resumed>) = 0 <0.000000008>\n")
    ev = parser.flush()
    assert ev["kind"].tolist() == [Kind.EXEC]
    assert (ev[0]["pid"], ev[0]["tid"], ev[0]["a0"], ev[0]["ts"]) == (20, 20, 21, 5_000_000_001)
    assert decode.comm_str(ev[0]["a1"], ev[0]["a2"]) == "true"  # the kernel names it after the file


def test_exec_names_the_program_as_the_kernel_does() -> None:
    for path, name in (("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1"),
                       ("./a-very-long-program-name", "a-very-long-pro"), ("sh", "sh"),
                       ("/opt/dir with \\\"quote\\\"/x", "x")):
        parser = StraceParser()
        parser.add_task(20, 20)
        parser.feed(f'20    5.000000001 execve("{path}", ["x"], 0x7ff /* 1 var */) = 0 <0.000000008>\n')
        (e,) = parser.flush()
        assert decode.comm_str(e["a1"], e["a2"]) == name


def test_open_call_stops_holding_back_after_hold_ns() -> None:
    parser = StraceParser(hold_ns=1000)
    parser.feed("10    1.000000000 vfork( <unfinished ...>\n")
    parser.feed("11    1.000000500 munmap(0x1000, 4096) = 0 <0.000000001>\n")
    assert len(parser.take()) == 0
    parser.feed("11    1.000002000 munmap(0x2000, 4096) = 0 <0.000000001>\n")
    assert len(parser.take()) == 2


@pytest.mark.parametrize("name", ["calls.raw.txt", "threads.raw.txt", "forks.raw.txt", "killed.raw.txt"])
def test_every_process_ends(name: str) -> None:
    parser, ev = parse(name)
    assert parser.live_processes() == []
    assert of_kind(ev, Kind.EXIT)["a2"].sum() == 1 + (of_kind(ev, Kind.FORK)["a2"] == 0).sum()
