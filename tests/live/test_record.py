"""Record real workloads with both backends and check the trace against what they printed."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from checks import check_phases, of_pid, summary_json
from helpers import HEAPLINE, ROOT, needs_root, needs_strace, num, parse_report, record_attached, run_heapline, workload

from tracer.events import Kind
from tracer.tracefile import open_trace

BACKENDS = [pytest.param("bpf", marks=needs_root), pytest.param("strace", marks=[needs_root, needs_strace])]
@pytest.mark.parametrize("backend", BACKENDS)
def test_launch_phases(backend: str, tmp_path) -> None:
    trace = str(tmp_path / "p.trace")
    r = run_heapline("record", "--backend", backend, "-o", trace, "--", workload("phases"))
    assert r.returncode == 0, r.stderr
    check_phases(trace, r.stdout, attached=False)
    t = open_trace(trace)
    first = t.events[t.events["pid"] == t.header["pid"]][:3]
    # launch misses nothing: the address space starts with the exec, and the loader's brk(NULL) is there
    assert first["kind"][0] == Kind.EXEC
    brks = of_pid(t.events, t.header["pid"], Kind.BRK)
    assert brks["a0"][0] == 0 and brks["ret"][0] == parse_report(r.stdout).brk("start")


@pytest.mark.parametrize("backend", BACKENDS)
def test_attach_phases(backend: str, tmp_path) -> None:
    trace = str(tmp_path / "a.trace")
    out = record_attached([workload("phases"), "--wait"], trace, "--backend", backend)
    check_phases(trace, out, attached=True)
    t = open_trace(trace)
    snap = t.header["snapshot"]
    assert snap["start_brk"] == parse_report(out).brk("start")
    assert any(m["path"].endswith("phases") for m in snap["mappings"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_children_threads_and_exit_codes(backend: str, tmp_path) -> None:
    trace = str(tmp_path / "f.trace")
    r = run_heapline("record", "--backend", backend, "-o", trace, "--", workload("forker"))
    assert r.returncode == 0, r.stderr
    rep = parse_report(r.stdout)
    parent = int(rep.all("pid")[0]["pid"])
    child = int(rep.all("fork")[0]["child"])
    tid = int(rep.all("thread")[0]["tid"])
    ev = open_trace(trace).events

    forks = of_pid(ev, parent, Kind.FORK)
    procs = forks[forks["a2"] == 0]
    threads = forks[forks["a2"] == 1]
    assert procs["a0"].tolist() == [child]
    assert tid in threads["a0"].tolist()

    # the child's own break and mapping, and its exit code
    child_breaks = of_pid(ev, child, Kind.BRK)["ret"].tolist()
    assert rep.brk("child-alloc") == child_breaks[-1]
    (cm,) = [kv for kv in rep.all("mmap") if int(kv["len"]) == 65536]
    cmaps = of_pid(ev, child, Kind.MMAP)
    assert num(cm["addr"]) in cmaps["ret"].tolist()
    cexit = of_pid(ev, child, Kind.EXIT)
    assert cexit["a2"].tolist() == [1] and cexit["a1"][0] == 1 and cexit["a0"][0] == 3

    # the thread's calls are the parent's address space, by the thread's tid
    tcalls = ev[(ev["pid"] == parent) & (ev["tid"] == tid)]
    for kv in rep.all("mmap"):
        if int(kv["len"]) == 4 * 4096:
            m = tcalls[(tcalls["kind"] == Kind.MMAP) & (tcalls["ret"] == num(kv["addr"]))]
            assert len(m) == 1
    for kv in rep.all("munmap"):
        m = tcalls[(tcalls["kind"] == Kind.MUNMAP) & (tcalls["a0"] == num(kv["addr"]))]
        assert len(m) == 1

    s = summary_json(trace)
    assert s["brk"]["final"] == rep.brk("end")
    everyone = json.loads(run_heapline("summary", trace, "--json", "--all-processes").stdout)
    assert {p["pid"] for p in everyone["processes"]} >= {parent, child}
    assert everyone["events"]["total"] > s["events"]["total"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exit_code_passes_through(backend: str, tmp_path) -> None:
    trace = str(tmp_path / "e.trace")
    r = run_heapline("record", "-q", "--backend", backend, "-o", trace, "--", workload("exit_code"), "42")
    assert r.returncode == 42, r.stderr
    s = summary_json(trace)
    assert s["target"]["exit_code"] == 42
    assert s["brk"]["final"] == parse_report(r.stdout).brk("end")


@needs_root
@needs_strace
def test_backends_agree_on_the_call_sequence(tmp_path) -> None:
    """Both backends see the identical brk/mmap/munmap/mremap/madvise/mprotect sequence."""
    seqs = {}
    for backend in ("bpf", "strace"):
        trace = str(tmp_path / f"{backend}.trace")
        # --no-alloc: allocator uprobes make the kernel map its [uprobes] page into the target,
        # which moves later mmap addresses; the syscall views must then differ by that page
        r = run_heapline("record", "-q", "--no-aslr", "--no-alloc", "--backend", backend, "-o", trace, "--",
                         workload("phases"))
        assert r.returncode == 0, r.stderr
        t = open_trace(trace)
        ev = t.events[t.events["pid"] == t.header["pid"]]
        ev = ev[np.isin(ev["kind"], [Kind.BRK, Kind.MMAP, Kind.MUNMAP, Kind.MREMAP, Kind.MADVISE, Kind.MPROTECT])]
        seqs[backend] = [tuple(int(x) for x in (e["kind"], e["a0"], e["a1"], e["a2"], e["a3"], e["a4"], e["a5"],
                                                 e["ret"])) for e in ev]
    assert len(seqs["bpf"]) > 100
    assert seqs["bpf"] == seqs["strace"]


@needs_root
def test_sigkill_leaves_a_trace_that_replays(tmp_path) -> None:
    trace = str(tmp_path / "k.trace")
    rec = subprocess.Popen([*HEAPLINE, "record", "-q", "--backend", "bpf", "-o", trace, "--",
                            workload("mmap_churn"), "100000000"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(rec.stdout.readline().split("pid=")[1])
        time.sleep(3.0)
        rec.kill()
        rec.wait(timeout=10)
    finally:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    t = open_trace(trace)
    assert not t.complete and t.notes
    assert (t.events["kind"] == Kind.MMAP).sum() > 1000
    r = run_heapline("summary", trace, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["trace"]["complete"] is False

    # its allocator probes stay defined in tracefs; the next recording removes them
    events = Path("/sys/kernel/tracing/uprobe_events")

    def left() -> list[str]:
        mine = re.compile(rf"[pr]:heapline/\w+_{rec.pid}_\d+ ")
        return [line for line in events.read_text().splitlines() if mine.match(line)]

    assert left()
    r = run_heapline("record", "-o", str(tmp_path / "next.trace"), "--", "/bin/true")
    assert r.returncode == 0 and "removed" in r.stderr and not left()


@pytest.mark.parametrize("backend", BACKENDS)
def test_interrupt_attach_leaves_target_running(backend: str, tmp_path) -> None:
    trace = str(tmp_path / "i.trace")
    prog = subprocess.Popen([workload("phases"), "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert "HL pid" in prog.stdout.readline()
        rec = subprocess.Popen([*HEAPLINE, "record", "--backend", backend, "-o", trace, "-p", str(prog.pid)],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
        err = ""
        while "recording:" not in err:
            line = rec.stderr.readline()
            assert line, err
            err += line
        rec.send_signal(2)
        assert rec.wait(timeout=30) == 130
        assert prog.poll() is None, "the attached target must keep running"
        t = open_trace(trace)
        assert t.complete and t.end["stop_reason"] == "interrupted"
    finally:
        prog.kill()


def _recording(trace: str, backend: str, *command: str) -> subprocess.Popen:
    """A recorder launching ``command``, once it says it is recording (its own session: no terminal)."""
    rec = subprocess.Popen([*HEAPLINE, "record", "--backend", backend, "-o", trace, "--", *command], cwd=ROOT,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    err = ""
    while "recording:" not in err:
        line = rec.stderr.readline()
        assert line, err
        err += line
    return rec


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_to_the_recorder_goes_to_the_launched_command(backend: str, tmp_path) -> None:
    """SIGTERM sent to the recorder alone is passed to the command, which it keeps tracing until the
    command exits; the recorder then exits with the command's status (strace does the same)."""
    trace = str(tmp_path / "s.trace")
    rec = _recording(trace, backend, "/bin/sleep", "30")
    t0 = time.monotonic()
    rec.send_signal(15)
    assert rec.wait(timeout=30) == 128 + 15
    assert time.monotonic() - t0 < 20, "the command must end with the signal, not run its 30 s"
    t = open_trace(trace)
    assert t.complete and t.end["stop_reason"] == "exit" and t.end["signals_forwarded"] == ["SIGTERM"]
    assert t.end["exit_code"] == 128 + 15
    child = int(t.header["pid"])
    assert subprocess.run(["kill", "-0", str(child)], capture_output=True).returncode != 0, "the command must be gone"
    ex = of_pid(t.events, child, Kind.EXIT)
    assert len(ex) and ex["a2"][-1] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_command_that_handles_the_signal_is_traced_to_its_end(backend: str, tmp_path) -> None:
    """A command that catches the forwarded signal goes on running, traced, and its own exit code is
    the recorder's."""
    trace = str(tmp_path / "h.trace")
    script = "trap 'sleep 0.3; exit 7' TERM; while :; do sleep 0.05; done"
    rec = _recording(trace, backend, "/bin/sh", "-c", script)
    time.sleep(0.3)
    sent = time.monotonic_ns()  # CLOCK_MONOTONIC, the trace's clock
    rec.send_signal(15)
    assert rec.wait(timeout=30) == 7
    t = open_trace(trace)
    assert t.end["exit_code"] == 7 and t.end["signals_forwarded"] == ["SIGTERM"]
    ex = of_pid(t.events, int(t.header["pid"]), Kind.EXIT)
    assert ex["a2"][-1] == 1 and ex["a0"][-1] == 7
    assert int(ex["ts"][-1]) - sent >= 300_000_000, "the trap ran 0.3 s after the signal, traced to its exit"
    execs = t.events[(t.events["kind"] == Kind.EXEC) & (t.events["ts"] >= sent)]
    assert len(execs), "the trap's sleep, exec'd after the signal, is in the trace"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a recording of a churn fills it."""
    where = tmp_path / "small"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", str(where)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disk_stops_tracing_lets_the_command_finish(backend: str, small_disk) -> None:
    """A full disk: one sentence, exit 73, the command runs to its end, and what was written reads
    back as a truncated trace."""
    trace = str(small_disk / "t.trace")
    churn = [workload("malloc_churn"), "2000000"] if backend == "bpf" else [workload("mmap_churn"), "100000"]
    r = run_heapline("record", "--backend", backend, "-o", trace, "--", *churn)
    assert r.returncode == 73, r.stderr
    assert "Traceback" not in r.stderr and "HL done" in r.stdout, "the command must run to its end"
    line = next(x for x in r.stderr.splitlines() if "cannot write the trace" in x)
    assert "No space left on device" in line and "the command exited with 0" in line
    t = open_trace(trace)
    assert not t.complete and len(t.events) > 0
    assert int(t.events["ts"].min()) >= int(t.header["start_ns"])


@needs_root
def test_unwritable_device_keeps_the_device_and_the_exit_code() -> None:
    r = run_heapline("record", "-o", "/dev/full", "--", workload("exit_code"), "3")
    assert r.returncode == 73 and "Traceback" not in r.stderr, r.stderr
    assert "/dev/full: No space left on device" in r.stderr and "the command exited with 3" in r.stderr
    assert Path("/dev/full").is_char_device(), "a failed recording must not remove what -o named"


@needs_root
def test_attach_to_a_process_whose_main_thread_exited(tmp_path) -> None:
    """Its leader is a zombie (its /proc files show no memory): heapline attaches through the thread
    that runs, with a snapshot of the real mappings and every allocator call of that thread."""
    trace = str(tmp_path / "z.trace")
    out = record_attached([workload("leader_exit"), "1000", "200"], trace)
    rep = parse_report(out)
    t = open_trace(trace)
    pid, tid = int(t.header["pid"]), num(rep.all("thread")[0]["tid"])
    snap = t.header["snapshot"]
    assert snap["mappings"] and snap["rss"]["anon"] > 0 and snap["start_brk"] > 0
    mine = t.events[t.events["pid"] == pid]
    mallocs = mine[(mine["kind"] == Kind.MALLOC) & (mine["a0"] == 200)]
    assert len(mallocs) == 1000 and set(mallocs["tid"].tolist()) == {tid}
    assert len(mine[(mine["kind"] == Kind.FREE) & (mine["tid"] == tid)]) == 1001  # the blocks and their array
    mm = rep.all("mmap")[0]
    maps = mine[mine["kind"] == Kind.MMAP]
    assert num(mm["addr"]) in maps["ret"].astype(np.uint64).tolist()


@needs_root
def test_madvise_advice_that_frees_nothing_is_not_given_back(tmp_path) -> None:
    """MADV_DONTFORK (node marks hundreds of MiB so) changes no page: it is listed apart, never as
    memory given back; MADV_DONTNEED of the same range is."""
    trace = str(tmp_path / "adv.trace")
    code = ("import mmap; m = mmap.mmap(-1, 1 << 20); m.write(b'x' * (1 << 20)); m.madvise(mmap.MADV_DONTFORK); "
            "m.madvise(mmap.MADV_DONTNEED, 0, 1 << 19)")
    r = run_heapline("record", "-q", "--no-alloc", "-o", trace, "--", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    s = summary_json(trace)
    assert s["madvise"]["by_advice"]["MADV_DONTFORK"] == 1 << 20
    assert s["madvise"]["released_bytes"] == s["madvise"]["by_advice"]["MADV_DONTNEED"] >= 1 << 19
    text = " ".join(run_heapline("summary", trace).stdout.split())
    assert "advice that frees nothing: MADV_DONTFORK 1 MiB" in text
    given = text.split("given back", 1)[1].split(";", 1)[0]
    assert "DONTFORK" not in given


@needs_root
def test_memory_given_back_while_running_by_path(tmp_path) -> None:
    """GIVEN_BACK_WHILE_RUNNING against what workloads/phases did and printed: free() trimmed the
    heap by the break it reported, and the program's own sbrk, madvise and munmap calls outside the
    allocator gave back exactly their lengths."""
    trace = str(tmp_path / "p.trace")
    r = run_heapline("record", "-q", "-o", trace, "--", workload("phases"))
    assert r.returncode == 0, r.stderr
    rep = parse_report(r.stdout)
    (f,) = [f for f in summary_json(trace)["findings"] if f["code"] == "GIVEN_BACK_WHILE_RUNNING"]
    by = f["evidence"]["by"]
    assert by["free"]["bytes_by_call"] == {"brk": rep.brk("alloc") - rep.brk("free")}
    own = by["program"]["bytes_by_call"]
    assert own["brk"] == rep.brk("sbrk-grow") - rep.brk("sbrk-shrink")
    assert own["madvise"] == sum(num(m["len"]) for m in rep.all("madvise"))
    mine = sum(num(m["len"]) for m in rep.all("munmap"))
    assert own["munmap"] >= mine and by["program"]["calls"]["munmap"] >= len(rep.all("munmap"))
    assert f["evidence"]["bytes"] == sum(p["bytes"] for p in by.values())


@needs_root
def test_a_child_holding_most_memory_is_named(tmp_path) -> None:
    """A shell whose child holds 50 MiB: the child's pid and a peak at least what the child read in
    its own /proc/self/status."""
    trace = str(tmp_path / "c.trace")
    code = ("import os; x = bytearray(50 << 20); x[::4096] = b'y' * len(x[::4096]); "
            "print('HL child pid=%d' % os.getpid()); "
            "print('HL status rss=%d' % (int([l for l in open('/proc/self/status') if l.startswith('RssAnon')][0]"
            ".split()[1]) * 1024)); import time; time.sleep(0.3)")
    r = run_heapline("record", "-q", "--no-alloc", "-o", trace, "--", "/bin/sh", "-c", f'python3 -c "{code}"; true')
    assert r.returncode == 0, r.stderr
    rep = parse_report(r.stdout)
    child, rss = num(rep.all("child")[0]["pid"]), num(rep.all("status")[0]["rss"])
    (f,) = [f for f in summary_json(trace)["findings"] if f["code"] == "CHILD_HOLDS_MOST"]
    assert f["evidence"]["pid"] == child and f["evidence"]["rss_anon_peak"] >= rss >= 50 << 20
    assert f["evidence"]["traced_rss_anon_peak"] < rss
