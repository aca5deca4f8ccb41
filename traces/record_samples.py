"""Re-record the sample traces in this folder (needs root): each trace beside the workload's own report.

    sudo .venv/bin/python traces/record_samples.py           # all of them
    sudo .venv/bin/python traces/record_samples.py sites     # only the sample with allocation stacks

Every sample is a real recording; tests/test_samples.py replays them without root and checks
them against the reports (``NAME.out``) the workloads printed while they were recorded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the workloads run from a neutral folder, so the traces name no folder of the recording machine
WORK = Path("/tmp/heapline-samples")
HEAPLINE = [sys.executable, "-m", "tracer.cli", "record", "-q"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SCENARIO_SAMPLES: list[tuple[str, tuple[str, ...], dict[str, str]]] = [
    ("tiny-mallocs", ("20000",), {}),
    ("tiny-mallocs", ("20000", "pin"), {}),
    ("free-and-sbrk", ("1000", "10240", "2"), {}),
    ("free-and-sbrk", ("1000", "10240", "1", "1", "999"), {}),
    ("free-and-sbrk", ("1000", "10240", "1", "500", "1000"), {}),
    ("mmap-threshold", (), {}),
    ("trim-threshold", ("mallopt",), {}),
    ("trim-threshold", ("env",), {"MALLOC_TRIM_THRESHOLD_": "16777216"}),
    ("trim-threshold", ("tunables",), {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=16777216"}),
    ("threads", (), {}),
    ("realloc-grow", (), {}),
    ("fork-exit", (), {}),
    ("reuse", ("20000",), {}),
    ("allocators", (), {}),
    ("allocators", (), {"LD_PRELOAD": JEMALLOC}),
]
#: a sample whose command line is another's, told apart by its environment
LABELS = {JEMALLOC: "jemalloc"}


def launch(name: str, backend: str, *argv: str, env: dict[str, str] | None = None, stacks: bool = False) -> None:
    extra = [x for k, v in (env or {}).items() for x in ("-E", f"{k}={v}")] + (["--stacks"] if stacks else [])
    out = subprocess.run([*HEAPLINE, "--backend", backend, *extra, "-o", str(HERE / f"{name}.trace"), "--", *argv],
                         cwd=WORK, env=ENV, capture_output=True, text=True, check=False)
    (HERE / f"{name}.out").write_text(out.stdout)
    print(f"{name}: exit {out.returncode}")


def attach(name: str, backend: str, *argv: str) -> None:
    prog = subprocess.Popen(list(argv), cwd=WORK, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    text = ""
    while "HL ready" not in text:
        text += prog.stdout.readline()
    rec = subprocess.Popen([*HEAPLINE[:-1], "--backend", backend, "-o", str(HERE / f"{name}.trace"),
                            "-p", str(prog.pid)], cwd=WORK, env=ENV, stderr=subprocess.PIPE, text=True)
    while "recording:" not in rec.stderr.readline():
        pass
    prog.stdin.write("g")
    prog.stdin.flush()
    text += prog.stdout.read()
    prog.wait()
    rec.wait()
    (HERE / f"{name}.out").write_text(text)
    print(f"{name}: recorder exit {rec.returncode}")


def main() -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "workloads")], check=True)
    WORK.mkdir(exist_ok=True)
    for name in ("phases", "forker", "sites"):
        shutil.copy2(ROOT / "workloads" / "bin" / name, WORK / name)
    if sys.argv[1:] == ["sites"]:  # the one sample with allocation stacks alone (the others stay as they are)
        launch("sites", "bpf", "./sites", stacks=True)
        shutil.rmtree(WORK)
        return
    launch("phases", "bpf", "./phases")
    launch("phases-strace", "strace", "./phases")
    attach("phases-attach", "bpf", "./phases", "--wait")
    launch("forker", "bpf", "./forker")
    launch("sites", "bpf", "./sites", stacks=True)  # the export tests read its allocation stacks
    # the scenarios, small enough to commit (tests/test_scenarios.py checks them without root)
    subprocess.run(["make", "-s", "-C", str(ROOT / "workloads" / "scenarios")], check=True)
    for name, args, env in SCENARIO_SAMPLES:
        shutil.copy2(ROOT / "workloads" / "scenarios" / "bin" / name, WORK / name)
        label = [LABELS[v] for v in env.values() if v in LABELS]
        launch("-".join(["scenario", name, *args, *label]), "bpf", f"./{name}", *args, env=env)
    shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
