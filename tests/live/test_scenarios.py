"""The scenario programs (workloads/scenarios): each recorded, and the findings checked against what
the program printed about itself (its own sbrk(0), pointers and RSS)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import ROOT, needs_root, num, parse_report, run_heapline

from tracer.analysis.explain import explain
from tracer.analysis.model import build
from tracer.tracefile import open_trace

BIN = ROOT / "workloads" / "scenarios" / "bin"
PAGE = 4096


SOURCES = [pytest.param("live", marks=needs_root), "sample"]


@pytest.fixture(params=SOURCES)
def source(request) -> str:
    return request.param


def label(name: str, args: tuple[str, ...]) -> str:
    return "-".join(["scenario", name, *args])


def get(tmp_path, source: str, name: str, *args: str, env: dict[str, str] | None = None):
    """A live recording (root), or the committed sample of the same run (traces/, no root needed)."""
    if source == "sample":
        base = ROOT / "traces" / label(name, args)
        if not base.with_suffix(".trace").exists():
            pytest.skip(f"no sample for {label(name, args)}")
        t = open_trace(str(base.with_suffix(".trace")))
        return t, parse_report(base.with_suffix(".out").read_text()), {f.code: f for f in explain(t)}
    return record(tmp_path, name, *args, env=env)


def record(tmp_path, name: str, *args: str, env: dict[str, str] | None = None, stacks: bool = False):
    if not (BIN / name).exists():
        subprocess.run(["make", "-s", "-C", str(ROOT / "workloads" / "scenarios")], check=True)
    trace = str(tmp_path / f"{name}.trace")
    extra = [x for k, v in (env or {}).items() for x in ("-E", f"{k}={v}")] + (["--stacks"] if stacks else [])
    r = run_heapline("record", "-q", *extra, "-o", trace, "--", str(BIN / name), *args)
    assert r.returncode == 0, r.stderr
    t = open_trace(trace)
    return t, parse_report(r.stdout), {f.code: f for f in explain(t)}


def test_tiny_mallocs_trim_lowers_the_break(tmp_path, source) -> None:
    t, rep, found = get(tmp_path, source, "tiny-mallocs", "20000")
    assert rep.brk("free") == rep.brk("alloc")  # free() gave nothing back
    trim = found["RELEASED_BY_TRIM"].evidence
    assert trim["by_call"].get("brk") == rep.brk("idle") - rep.brk("trim")
    assert trim["break_after"] == hex(rep.brk("trim"))
    # before the trim: many small blocks freed, the heap still large
    at = int(found["RELEASED_BY_TRIM"].ts) - int(t.meta["start_ns"]) - 1
    early = {f.code: f for f in explain(t, at_ns=at)}
    assert "FREED_NOT_CONSOLIDATED" in early


def test_tiny_mallocs_pinned_trim_uses_madvise(tmp_path, source) -> None:
    _, rep, found = get(tmp_path, source, "tiny-mallocs", "20000", "pin")
    trim = found["RELEASED_BY_TRIM"].evidence
    assert trim["by_call"].get("madvise", 0) > 256 << 10
    assert "BRK_PINNED_BY_LIVE_CHUNK" in found
    assert rep.brk("trim") > rep.brk("start") + (256 << 10)  # the break stayed high


@needs_root
def test_the_pinning_block_names_its_allocation_stack(tmp_path) -> None:
    _, rep, found = record(tmp_path, "tiny-mallocs", "20000", "pin", stacks=True)
    pinned = found["BRK_PINNED_BY_LIVE_CHUNK"]
    (kv,) = rep.all("pin")
    block = pinned.evidence["block"]
    assert block["address"] == kv["ptr"]  # the block the program says it kept
    first = block["stack"][0]
    assert first["function"] == "main" and first["module"].endswith("/tiny-mallocs")
    assert "allocated by main (tiny-mallocs)" in pinned.message


@pytest.mark.parametrize("args,falls", [(("2",), False), (("1", "1", "999"), False), (("1", "500", "1000"), True)])
def test_free_and_sbrk(tmp_path, source, args: tuple[str, ...], falls: bool) -> None:
    t, rep, _ = get(tmp_path, source, "free-and-sbrk", "1000", "10240", *args)
    tl = build(t)
    assert tl.breaks["brk"].iloc[-1] == rep.brk("free")
    assert (rep.brk("free") < rep.brk("alloc")) is falls
    in_free = tl.releases[(tl.releases["call"] == "brk") & (tl.releases["inside"] == "free")]
    assert (in_free["bytes"].sum() == rep.brk("alloc") - rep.brk("free")) if falls else in_free.empty


def test_mmap_threshold(tmp_path, source) -> None:
    _, rep, found = get(tmp_path, source, "mmap-threshold")
    blocks = rep.all("block")
    mm = [kv for kv in blocks if kv["mmapped"] == "1"]
    f = found["MMAP_CHUNK_RETURNED"].evidence
    assert f["count"] == len(mm)
    assert any(kv["mmapped"] == "0" and int(kv["size"]) == 256 * 1024 for kv in blocks[2:])


@pytest.mark.parametrize("mode,env,origin", [
    ("mallopt", {}, "mallopt(M_TRIM_THRESHOLD)"),
    ("env", {"MALLOC_TRIM_THRESHOLD_": "16777216"}, "MALLOC_TRIM_THRESHOLD_"),
    ("tunables", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=16777216"}, "GLIBC_TUNABLES"),
])
def test_trim_threshold_sources(tmp_path, source, mode: str, env: dict[str, str], origin: str) -> None:
    _, rep, found = get(tmp_path, source, "trim-threshold", mode, env=env)
    ev = found["TOP_BELOW_TRIM_THRESHOLD"].evidence
    assert ev["thresholds"]["trim"] == 16 << 20 and ev["thresholds"]["source"] == origin
    assert ev["break"] == hex(rep.brk("free"))


def test_threads_keep_arena_memory(tmp_path, source) -> None:
    _, _, found = get(tmp_path, source, "threads")
    ev = found["ARENA_RETAINED"].evidence["arenas"]
    assert ev["free"] > 0 and ev["count"] >= 1 and ev["reserved"] == ev["count"] * (64 << 20)


def test_realloc_grow_moves_with_mremap(tmp_path, source) -> None:
    t, rep, _ = get(tmp_path, source, "realloc-grow")
    tl = build(t)
    moves = [(num(kv["old"]), num(kv["new"])) for kv in rep.all("realloc") if kv["moved"] == "1"]
    mremaps = t.events[(t.events["kind"] == 4) & (t.events["pid"] == t.meta["pid"])]
    header = 16  # glibc's mmapped chunk: the block starts 16 bytes into the mapping
    assert {(int(e["a0"]) + header, int(e["ret"]) + header) for e in mremaps} >= set(moves)
    big = tl.releases[(tl.releases["call"] == "munmap") & (tl.releases["bytes"] >= 64 << 20)]
    assert len(big) == 1 and big["inside"].iloc[0] == "free"


def test_fork_exit_child_returns_everything(tmp_path, source) -> None:
    t, rep, _ = get(tmp_path, source, "fork-exit")
    child = int(rep.all("fork")[0]["child"])
    exits = [f for f in explain(t) if f.code == "RETURNED_AT_EXIT" and f.evidence["pid"] == child]
    assert len(exits) == 1 and exits[0].evidence["footprint"] >= 50 << 20
    rss, phase = {}, None
    for verb, kv in rep.lines:
        if verb == "brk":
            phase = kv["phase"]
        elif verb == "rss":
            rss[phase] = int(kv["anon"])
    assert abs(rss["after-child"] - rss["before-fork"]) <= 2 * PAGE  # the parent's RSS is untouched


def test_reuse_does_not_grow(tmp_path, source) -> None:
    _, rep, found = get(tmp_path, source, "reuse", "20000")
    assert rep.brk("alloc2") == rep.brk("alloc1")
    assert "REUSED_NOT_GROWN" in found


@needs_root
def test_demo_command_writes_traces_and_summaries(tmp_path) -> None:
    r = run_heapline("demo", "mmap-threshold", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "mmap-threshold.summary.json").read_text())
    assert "MMAP_CHUNK_RETURNED" in {f["code"] for f in s["findings"]}
    assert os.path.exists(tmp_path / "mmap-threshold.trace")


@needs_root
@pytest.mark.parametrize("family,lib,grows_break", [
    ("glibc", None, True),
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", False),
    ("tcmalloc", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", True),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2", False),
])
def test_allocators_brk_or_mmap(tmp_path, family: str, lib: str | None, grows_break: bool) -> None:
    """One workload, four allocators: which ones take memory with brk, which with mmap."""
    if lib is not None and not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    t, rep, found = record(tmp_path, "allocators", env={"LD_PRELOAD": lib} if lib else None)
    assert t.header["backend"]["allocator"]["family"] == family == rep.all("allocator")[0]["name"]
    assert (rep.brk("alloc") > rep.brk("start")) is grows_break
    tl = build(t)
    assert tl.breaks["brk"].iloc[-1] == rep.brk("idle-more")
    if not grows_break:
        grown = tl.memory["anon_mapped"].max() - tl.memory["anon_mapped"].iloc[0]
        assert grown >= 30 << 20  # the 20000 blocks came from mmapped regions
    assert "RETURNED_AT_EXIT" in found


@needs_root
def test_jemalloc_decay_returns_pages_later(tmp_path) -> None:
    """jemalloc purges dirty pages seconds after the frees, while it is being called: ALLOCATOR_DECAY."""
    lib = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    if not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    t, rep, found = record(tmp_path, "allocators", "1000", "12", env={"LD_PRELOAD": lib})
    decay = found["ALLOCATOR_DECAY"].evidence
    assert decay["family"] == "jemalloc" and decay["by_advice"].get("MADV_DONTNEED", 0) >= 1 << 20
    # the pages went back well after the frees (the program's free phase ends early in the run)
    assert max(decay["times_s"]) > 2.0
