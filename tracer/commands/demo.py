"""``heapline demo [NAME]``: record the scenario programs of workloads/scenarios and explain them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tracer.commands.base import Say
from tracer.errors import Exit, HeaplineError

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "workloads" / "scenarios" / "bin"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
MIMALLOC = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"


@dataclass
class Run:
    label: str  # the trace's file name (without .trace)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    what: str
    runs: list[Run]


SCENARIOS = [
    Scenario("tiny-mallocs", "a million 4-byte blocks freed: the break stays high until malloc_trim(0)",
             [Run("tiny-mallocs"), Run("tiny-mallocs-pinned", ["1000000", "pin"])]),
    Scenario("reuse", "freed memory is reused: the break does not grow the second time", [Run("reuse")]),
    Scenario("free-and-sbrk", "TLPI 7.1: which frees lower the break",
             [Run("free-and-sbrk-step2", ["1000", "10240", "2"]),
              Run("free-and-sbrk-1-999", ["1000", "10240", "1", "1", "999"]),
              Run("free-and-sbrk-500-1000", ["1000", "10240", "1", "500", "1000"])]),
    Scenario("mmap-threshold", "large blocks are mmapped and returned, then glibc's thresholds rise",
             [Run("mmap-threshold")]),
    Scenario("trim-threshold", "the trim threshold from mallopt, MALLOC_TRIM_THRESHOLD_ and GLIBC_TUNABLES",
             [Run("trim-threshold-default", ["default"]), Run("trim-threshold-mallopt", ["mallopt"]),
              Run("trim-threshold-env", ["env"], {"MALLOC_TRIM_THRESHOLD_": "16777216"}),
              Run("trim-threshold-tunables", ["tunables"],
                  {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=16777216"})]),
    Scenario("threads", "thread arenas: mmapped heaps grown with mprotect, trimmed or kept", [Run("threads")]),
    Scenario("realloc-grow", "a block grown by realloc from 1 MiB to 64 MiB moves with mremap",
             [Run("realloc-grow")]),
    Scenario("fork-exit", "a child allocates and exits; the parent's RSS is untouched", [Run("fork-exit")]),
    Scenario("allocators", "one workload under glibc, jemalloc, tcmalloc and mimalloc",
             [Run("allocators-glibc"), Run("allocators-jemalloc", env={"LD_PRELOAD": JEMALLOC}),
              Run("allocators-tcmalloc", env={"LD_PRELOAD": TCMALLOC}),
              Run("allocators-mimalloc", env={"LD_PRELOAD": MIMALLOC})]),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def program(name: str) -> str:
    path = SCENARIOS_DIR / name
    if not path.exists():
        raise HeaplineError(f"the scenario programs are not built: run `make workloads` ({path} is missing)",
                            Exit.COMMAND_NOT_FOUND)
    return str(path)


def main(say: Say, names: list[str], out_dir: str) -> int:
    """The verb: run the scenarios, say where their traces and summaries are."""
    done = run(names, out_dir, say)
    say(f"{len(done)} traces and summaries in {out_dir}")
    return 0


def run(names: list[str], out_dir: str, say: Say) -> list[dict]:
    """Record each scenario's runs into out_dir/<label>.trace with a summary beside it."""
    import os

    from tracer.analysis.summary import summarize
    from tracer.record.session import Request, record
    from tracer.tracefile import open_trace

    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise HeaplineError(f"no scenario named {unknown[0]!r} (choose from {', '.join(BY_NAME)})", Exit.USAGE)
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for s in [BY_NAME[n] for n in names] or SCENARIOS:
        for r in s.runs:
            env = None
            if r.env:
                if "LD_PRELOAD" in r.env and not os.path.exists(r.env["LD_PRELOAD"]):
                    say(f"{r.label}: skipped, {r.env['LD_PRELOAD']} is not installed")
                    continue
                env = {**os.environ, **r.env}
            trace = os.path.join(out_dir, f"{r.label}.trace")
            say(f"{r.label}: {s.what}")
            result = record(Request(output=trace, command=[program(s.name), *r.args], quiet=True, env=env), say)
            summary = summarize(open_trace(trace))
            with open(os.path.join(out_dir, f"{r.label}.summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
            for finding in summary["findings"]:
                say(f"  {finding['code']}: {finding['message']}")
            done.append({"label": r.label, "trace": trace, "exit_code": result.exit_code,
                         "findings": [f["code"] for f in summary["findings"]]})
    return done
