"""Processes named by the program they run, on a real gcc compile, against strace's own execve log;
and the report's pages, one per process, linked by the selector."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import needs_root, needs_strace, run_heapline

from tracer.analysis.processes import processes
from tracer.tracefile import open_trace

pytestmark = [pytest.mark.root, needs_root, needs_strace,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")]
EXECVE = re.compile(r'^(\d+)\s+execve\("([^"]*)".*\)\s+=\s+0$')


def compile_args(tmp_path) -> list[str]:  # noqa: ANN001
    src = tmp_path / "t.c"
    src.write_text("int f(int x) { return x * 3; }\nint main(void) { return f(0); }\n")
    return ["gcc", "-O2", "-c", str(src), "-o", str(tmp_path / "t.o")]


def execs_by_strace(tmp_path, args: list[str]) -> dict[str, int]:  # noqa: ANN001
    """program name -> how many processes ran it, from strace -f's successful execve calls."""
    log = tmp_path / "execve.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(log), *args], check=True, timeout=60)
    names: dict[str, int] = {}
    for line in log.read_text().splitlines():
        m = EXECVE.match(line)
        if m:
            name = m[2].rsplit("/", 1)[-1][:15]
            names[name] = names.get(name, 0) + 1
    return names


@pytest.mark.parametrize("backend", ["bpf", "strace"])
def test_processes_are_named_as_strace_saw_them_exec(tmp_path, backend: str) -> None:
    args = compile_args(tmp_path)
    want = execs_by_strace(tmp_path, args)
    assert {"gcc", "cc1", "as"} <= set(want)
    trace = tmp_path / "gcc.trace"
    r = run_heapline("record", "-q", "--backend", backend, "-o", str(trace), "--", *args)
    assert r.returncode == 0, r.stderr
    t = open_trace(str(trace))
    procs = processes(t)
    got: dict[str, int] = {}
    for p in procs:
        assert p.named_by == "exec"
        got[p.program] = got.get(p.program, 0) + 1
    assert got == want
    assert procs[0].program == "gcc" and procs[0].parent is None
    assert all(p.parent == procs[0].pid for p in procs[1:])

    built = run_heapline("report", str(trace), "-o", str(tmp_path / "gcc.html"))
    assert built.returncode == 0, built.stderr
    for p in procs[1:]:
        page = (tmp_path / f"gcc.pid-{p.pid}.html").read_text()
        assert f"heapline: pid {p.pid} <code>{p.program}</code>, a child of <code>gcc" in page
        assert f"value=\"gcc.pid-{p.pid}.html\" selected" in page and "value=\"gcc.html\"" in page
