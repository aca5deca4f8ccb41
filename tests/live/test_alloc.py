"""Allocator calls through uprobes, checked call for call against what alloc_calls printed."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from helpers import HEAPLINE, ROOT, Report, needs_root, num, parse_report, record_attached, run_heapline, workload

from tracer.analysis.allocmodel import live_series
from tracer.events import ALLOCATOR_KINDS, KIND_NAMES, Kind
from tracer.tracefile import open_trace

START, END = 1234567, 7654321
COUNTED = ["malloc", "calloc", "realloc", "reallocarray", "free", "posix_memalign", "aligned_alloc", "memalign",
           "valloc", "pvalloc", "malloc_trim", "mallopt"]
PRELOADS = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "mimalloc": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
}


def window(ev: np.ndarray, pid: int) -> np.ndarray:
    """The program's counted calls: after the start marker's free, before the end marker's malloc."""
    ev = ev[ev["pid"] == pid]
    mallocs = ev[ev["kind"] == Kind.MALLOC]
    (start,) = mallocs["ret"][mallocs["a0"] == START]
    (end_ts,) = mallocs["ts"][mallocs["a0"] == END]
    frees = ev[(ev["kind"] == Kind.FREE) & (ev["a0"] == np.uint64(start))]
    begin_ts = frees["ts"][0]
    return ev[(ev["ts"] > begin_ts) & (ev["ts"] < end_ts) & (ev["kind"] >= Kind.MALLOC)]


def counts(ev: np.ndarray) -> dict[str, int]:
    out = {name: 0 for name in COUNTED}
    for k in ALLOCATOR_KINDS:
        name = KIND_NAMES[int(k)]
        if name in out:
            out[name] = int((ev["kind"] == k).sum())
    return out


def expected(kv: dict[str, str]) -> dict[str, int]:
    return {name: int(kv[name]) for name in COUNTED}


def check(trace: str, rep: Report, aliases: bool = True) -> None:
    t = open_trace(trace)
    assert t.complete and t.end["lost_total"] == 0
    # the recorder's CPU, and the part of it the trace file took, were measured
    assert 0 < t.end["writer_cpu_s"] <= t.end["collector_cpu_s"]
    info = t.header["backend"]["allocator"]
    assert info["traced"], info
    pid = int(rep.all("pid")[0]["pid"])
    calls = window(t.events, pid)
    want = expected(rep.all("alloc")[0])
    got = counts(calls)
    if aliases and "memalign" in info["sites"].get("aligned_alloc", {}).get("aliases", []):
        # one function in this libc: a probe cannot tell which name the program called
        want["aligned_alloc"] += want.pop("memalign")
        got.pop("memalign")
    assert got == want
    for kv in rep.all("calls"):  # per thread
        mine = counts(calls[calls["tid"] == int(kv["tid"])])
        exp = expected(kv)
        if "memalign" not in got:
            exp["aligned_alloc"] += exp.pop("memalign")
            mine.pop("memalign")
        assert mine == exp, kv["tid"]

    # the live blocks at the end are exactly the program's, pointer for pointer
    live = live_series(calls)
    assert live.unmatched_frees == 0
    (lv,) = rep.all("live")
    assert live.bytes_final == int(lv["bytes"]) and live.blocks_final == int(lv["blocks"])
    blocks = sorted((num(kv["ptr"]), int(kv["size"])) for kv in rep.all("block"))
    assert sorted(zip(live.open_ptr.tolist(), live.open_size.tolist(), strict=True)) == blocks

    # the reallocs the program saw, as the probes saw them
    reallocs = calls[calls["kind"] == Kind.REALLOC]
    seen = [(int(r["a0"]), int(r["ret"]), int(r["a1"])) for r in reallocs]
    assert seen == [(num(kv["old"]), num(kv["new"]), int(kv["size"])) for kv in rep.all("realloc")]
    pm = calls[calls["kind"] == Kind.POSIX_MEMALIGN]
    assert [int(x) for x in pm["a3"]] == [num(kv["ptr"]) for kv in rep.all("posix_memalign")]

    s = json.loads(run_heapline("summary", trace, "--json", "--all-processes").stdout)
    assert s["alloc"]["traced"] is True
    (proc,) = [p for p in s["processes"] if p["pid"] == pid]
    assert proc["alloc"]["calls"]["malloc"] >= want["malloc"]


@needs_root
@pytest.mark.parametrize("threads", [0, 3])
def test_launch_glibc(threads: int, tmp_path) -> None:
    trace = str(tmp_path / "a.trace")
    r = run_heapline("record", "-q", "-o", trace, "--", workload("alloc_calls"), "--extra", "--threads", str(threads))
    assert r.returncode == 0, r.stderr
    check(trace, parse_report(r.stdout))


@needs_root
def test_attach_glibc(tmp_path) -> None:
    trace = str(tmp_path / "a.trace")
    out = record_attached([workload("alloc_calls"), "--wait", "--extra"], trace)
    check(trace, parse_report(out))


@needs_root
@pytest.mark.parametrize("name", sorted(PRELOADS))
def test_launch_preloaded_allocator(name: str, tmp_path) -> None:
    lib = PRELOADS[name]
    if not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    trace = str(tmp_path / "a.trace")
    r = run_heapline("record", "-q", "-E", f"LD_PRELOAD={lib}", "-o", trace, "--", workload("alloc_calls"))
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    assert t.header["backend"]["allocator"]["family"] == name
    check(trace, parse_report(r.stdout))


@needs_root
def test_no_alloc_records_syscalls_only(tmp_path) -> None:
    trace = str(tmp_path / "n.trace")
    r = run_heapline("record", "-q", "--no-alloc", "-o", trace, "--", workload("alloc_calls"))
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    assert not (t.events["kind"] >= Kind.MALLOC).any()
    assert (t.events["kind"] == Kind.BRK).any()
    s = json.loads(run_heapline("summary", trace, "--json").stdout)
    assert s["alloc"]["traced"] is False


@needs_root
def test_static_binary_gets_a_notice_and_the_syscall_view(tmp_path) -> None:
    src = tmp_path / "s.c"
    src.write_text("#include <stdlib.h>\nint main(void){ void *volatile p = malloc(100000); free(p); return 0; }\n")
    exe = tmp_path / "s"
    if subprocess.run(["gcc", "-static", "-o", str(exe), str(src)], capture_output=True).returncode != 0:
        pytest.skip("no static libc to link with")
    trace = str(tmp_path / "s.trace")
    r = run_heapline("record", "-o", trace, "--", str(exe))
    assert r.returncode == 0, r.stderr
    assert "allocator calls are not traced" in r.stderr and "static" in r.stderr
    t = open_trace(trace)
    assert (t.events["kind"] == Kind.BRK).any() and not (t.events["kind"] >= Kind.MALLOC).any()


CXX = r"""
#include <cstdio>
#include <cstdlib>
#include <new>
#include <unistd.h>
static void *volatile keep[64];
int main() {
    void *volatile m = malloc(1234567);  // start marker (volatile: the compiler may not drop it)
    free(m);
    for (int i = 0; i < 10; i++) keep[i] = new char[100 + i];
    for (int i = 10; i < 20; i++) keep[i] = new long(i);
    for (int i = 0; i < 10; i++) delete[] static_cast<char *>(keep[i]);
    for (int i = 10; i < 15; i++) delete static_cast<long *>(keep[i]);
    m = malloc(7654321);  // end marker
    free(m);
    char line[64];
    int n = snprintf(line, sizeof line, "HL pid pid=%d\n", (int)getpid());
    (void)!write(1, line, n);
    return 0;
}
"""


@needs_root
@pytest.mark.parametrize("name", ["glibc", *sorted(PRELOADS)])
def test_cxx_new_and_delete_counted_once(name: str, tmp_path) -> None:
    """20 news and 15 deletes: each delete is one record, even where delete tail-calls free."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src, exe = tmp_path / "n.cpp", tmp_path / "n"
    src.write_text(CXX)
    subprocess.run(["g++", "-O1", "-o", str(exe), str(src)], check=True)
    args = ["record", "-q", "-o", str(tmp_path / "n.trace")]
    if name != "glibc":
        if not os.path.exists(PRELOADS[name]):
            pytest.skip(f"{PRELOADS[name]} is not installed")
        args += ["-E", f"LD_PRELOAD={PRELOADS[name]}"]
    r = run_heapline(*args, "--", str(exe))
    assert r.returncode == 0, r.stderr
    t = open_trace(str(tmp_path / "n.trace"))
    calls = window(t.events, int(parse_report(r.stdout).all("pid")[0]["pid"]))
    news = int(np.isin(calls["kind"], [Kind.NEW, Kind.MALLOC]).sum())
    deletes = int(np.isin(calls["kind"], [Kind.DELETE, Kind.FREE]).sum())
    assert (news, deletes) == (20, 15)
    live = live_series(calls)
    assert live.blocks_final == 5 and live.unmatched_frees == 0


@needs_root
def test_stacks_name_the_allocation_sites(tmp_path) -> None:
    """--stacks: each counted allocation carries its stack; frame 0 is in the program, symbolized."""
    trace = str(tmp_path / "s.trace")
    out = record_attached([workload("alloc_calls"), "--wait", "--threads", "2"], trace, "--stacks")
    t = open_trace(trace)
    st = t.end["backend_end"]["stacks"]
    modules = st["modules"]
    calls = window(t.events, int(parse_report(out).all("pid")[0]["pid"]))
    allocs = calls[np.isin(calls["kind"], [Kind.MALLOC, Kind.CALLOC, Kind.REALLOC, Kind.POSIX_MEMALIGN])]
    assert len(allocs) > 100 and (allocs["a4"] > 0).all()
    for sid in set(allocs["a4"].tolist()):
        frames = st["stacks"][str(sid)]
        addr, module, offset, symbol = frames[0]
        assert modules[module]["path"].endswith("alloc_calls") and modules[module]["build_id"]
        assert symbol is not None and offset > 0
    symbols = {f[3].split("+")[0] for sid in set(allocs["a4"].tolist()) for f in st["stacks"][str(sid)] if f[3]}
    assert "main" in symbols and "worker_main" in symbols


OTHER_TRACER = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from tracer.record.backends.bpf import kheaders
os.environ.setdefault("BCC_KERNEL_SOURCE", kheaders.find().path)
from bcc import BPF
b = BPF(text="int hit(void *ctx) { return 0; }")
lib = "/lib/x86_64-linux-gnu/libc.so.6"
for sym in ("malloc", "free", "calloc", "realloc"):
    b.attach_uprobe(name=lib, sym=sym, fn_name="hit", pid=int(sys.argv[1]))
    b.attach_uretprobe(name=lib, sym=sym, fn_name="hit", pid=int(sys.argv[1]))
print("attached", flush=True)
sys.stdin.read()
"""


@needs_root
def test_another_tracer_on_the_same_functions(tmp_path) -> None:
    """Another tool's uprobes on malloc/free (at the entry, where heapline's are not) change nothing."""
    trace = str(tmp_path / "o.trace")
    others: list[subprocess.Popen] = []

    def other_tracer(pid: int) -> None:
        other = subprocess.Popen([HEAPLINE[0], "-c", OTHER_TRACER, str(pid), str(ROOT)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        others.append(other)
        assert "attached" in other.stdout.readline()

    try:
        out = record_attached([workload("alloc_calls"), "--wait"], trace, before=other_tracer)
    finally:
        for o in others:
            o.kill()
    check(trace, parse_report(out))
    # bcc's Python binding registers its probes with a stray reference-counter offset: heapline
    # shares the site the way bcc does, for the target alone (children are then not followed)
    assert open_trace(trace).header["backend"]["allocator"]["children"] is False


@needs_root
def test_a_forked_and_execed_child_is_traced(tmp_path) -> None:
    """sh forks, the child execs alloc_calls: its calls are traced call for call, as if launched."""
    trace = str(tmp_path / "c.trace")
    script = f"{workload('alloc_calls')} --extra --threads 2; true"  # not the last command: sh forks
    r = run_heapline("record", "-q", "-o", trace, "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    rep = parse_report(r.stdout)
    assert int(rep.all("pid")[0]["pid"]) != open_trace(trace).header["pid"]
    check(trace, rep)


@needs_root
def test_a_script_is_traced_through_its_interpreter(tmp_path) -> None:
    """A #!/bin/sh script launched directly: sh's allocator is probed, and the program it runs
    (same library) is traced call for call."""
    script = tmp_path / "run.sh"
    script.write_text(f"#!/bin/sh\n{workload('alloc_calls')} --extra\ntrue\n")
    script.chmod(0o755)
    trace = str(tmp_path / "s.trace")
    r = run_heapline("record", "-q", "-o", trace, "--", str(script))
    assert r.returncode == 0, r.stderr
    assert "not traced" not in r.stderr
    check(trace, parse_report(r.stdout))


@needs_root
def test_a_child_forked_after_the_attach_is_traced(tmp_path) -> None:
    trace = str(tmp_path / "c.trace")
    script = f"echo 'HL ready'; head -c1 >/dev/null; {workload('alloc_calls')} --extra; true"
    out = record_attached(["/bin/sh", "-c", script], trace)
    check(trace, parse_report(out))


@needs_root
@pytest.mark.parametrize("follow", [True, False])
def test_a_forked_childs_own_blocks(follow: bool, tmp_path) -> None:
    """forker's child mallocs 1049 blocks of 1000 bytes and exits without freeing them."""
    trace = str(tmp_path / "f.trace")
    r = run_heapline("record", "-q", *([] if follow else ["--no-follow"]), "-o", trace, "--", workload("forker"))
    assert r.returncode == 0, r.stderr
    child = int(parse_report(r.stdout).all("fork")[0]["child"])
    t = open_trace(trace)
    assert t.header["backend"]["allocator"]["children"] is follow
    ev = t.events[(t.events["pid"] == child) & (t.events["kind"] >= Kind.MALLOC)]
    if not follow:
        assert len(ev) == 0
        return
    assert counts(ev) == {**{name: 0 for name in COUNTED}, "malloc": 1049}
    assert (ev["a0"] == 1000).all()
    live = live_series(ev)
    assert (live.bytes_final, live.blocks_final, live.unmatched_frees) == (1049 * 1000, 1049, 0)
    # the summary counts the blocks the parent had live at the fork as the child's too
    parent = t.events[(t.events["pid"] == t.header["pid"]) & (t.events["kind"] >= Kind.MALLOC)]
    forked_at = int(t.events["ts"][(t.events["kind"] == Kind.FORK) & (t.events["a0"] == child)][0])
    at_fork = live_series(parent[parent["ts"] < forked_at])
    s = json.loads(run_heapline("summary", trace, "--json", "--all-processes").stdout)
    (mine,) = [p for p in s["processes"] if p["pid"] == child]
    assert mine["alloc"]["calls"]["malloc"] == 1049
    assert mine["alloc"]["live_bytes_final"] == 1049 * 1000 + at_fork.bytes_final
    assert mine["alloc"]["live_blocks_final"] == 1049 + at_fork.blocks_final


@needs_root
def test_a_child_with_another_allocator_is_named(tmp_path) -> None:
    """A child that gets malloc from jemalloc is not traced by glibc's probes: the trace says so."""
    lib = PRELOADS["jemalloc"]
    if not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    trace = str(tmp_path / "o.trace")
    r = run_heapline("record", "-o", trace, "--", "/bin/sh", "-c", f"LD_PRELOAD={lib} sleep 0.5; sleep 0.3; true")
    assert r.returncode == 0, r.stderr
    s = json.loads(run_heapline("summary", trace, "--json").stdout)
    assert [(o["program"], o["family"], o["library"]) for o in s["alloc"]["other_allocators"]] == [
        ("sleep", "jemalloc", lib)
    ]  # the second sleep uses glibc's malloc, the traced one
    assert "gets malloc from " + lib in r.stderr


@needs_root
def test_a_child_forked_before_the_attach_is_traced(tmp_path) -> None:
    """heapline attaches to sh while its child alloc_calls already runs (waiting to start)."""
    trace = str(tmp_path / "c.trace")
    out = record_attached(["/bin/sh", "-c", f"{workload('alloc_calls')} --wait --extra; true"], trace)
    rep = parse_report(out)
    t = open_trace(trace)
    assert int(rep.all("pid")[0]["pid"]) != t.header["pid"]
    check(trace, rep)
