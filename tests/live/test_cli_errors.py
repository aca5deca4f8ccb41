"""Errors users hit: one clear sentence, a distinct exit code, nothing left half-done."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import HEAPLINE, ROOT, needs_root, run_heapline, workload
from typer.testing import CliRunner


def one_sentence(stderr: str) -> bool:
    return "Traceback" not in stderr and stderr.strip().count("\n") == 0


@needs_root
def test_command_not_found(tmp_path) -> None:
    out = tmp_path / "x.trace"
    r = run_heapline("record", "-o", str(out), "--", "no-such-program-heapline")
    assert r.returncode == 127 and "command not found" in r.stderr and one_sentence(r.stderr)
    assert not out.exists()


@needs_root
def test_not_executable(tmp_path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("hi")
    r = run_heapline("record", "-o", str(tmp_path / "x.trace"), "--", str(f))
    assert r.returncode == 126 and one_sentence(r.stderr)


@needs_root
def test_pid_not_found(tmp_path) -> None:
    r = run_heapline("record", "-o", str(tmp_path / "x.trace"), "-p", "4194304")
    assert r.returncode == 20 and "no process" in r.stderr and one_sentence(r.stderr)


@needs_root
def test_output_not_writable(tmp_path) -> None:
    r = run_heapline("record", "-o", str(tmp_path / "missing-dir" / "x.trace"), "--", workload("exit_code"), "0")
    assert r.returncode == 73 and "cannot write" in r.stderr and one_sentence(r.stderr)


def test_usage_errors() -> None:
    r = run_heapline("record", "-o", "/tmp/never.trace")
    assert r.returncode == 2 and one_sentence(r.stderr)
    r = run_heapline("record", "--backend", "dtrace", "-o", "/tmp/never.trace", "--", "true")
    assert r.returncode == 2 and one_sentence(r.stderr)


def test_not_root_with_bpf_backend(monkeypatch, tmp_path) -> None:
    import tracer.record.backends.bpf.backend as bpf
    from tracer.cli import app

    monkeypatch.setattr(bpf.os, "geteuid", lambda: 1000)
    r = CliRunner().invoke(app, ["record", "--backend", "bpf", "-o", str(tmp_path / "x.trace"), "--", "true"])
    assert r.exit_code == 10 and "needs root" in r.output and one_sentence(r.output)
    assert not (tmp_path / "x.trace").exists()


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_no_ebpf_without_capabilities(tmp_path) -> None:
    """Root without capabilities cannot load BPF: a clear sentence and exit code 11."""
    cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *HEAPLINE,
           "record", "--backend", "bpf", "-o", str(tmp_path / "x.trace"), "--", "true"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 11 and "eBPF" in r.stderr and "Traceback" not in r.stderr


@needs_root
def test_launched_target_inherits_no_tracer_files(tmp_path) -> None:
    plain = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout.split()
    r = run_heapline("record", "-q", "-o", str(tmp_path / "x.trace"), "--", "ls", "/proc/self/fd")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(plain)


@pytest.mark.parametrize(("args", "code", "says"), [
    (["-p", "-5"], 2, "--pid takes a process id"),
    (["-p", "0"], 2, "--pid takes a process id"),
    (["--duration", "-1"], 2, "--duration takes"),
    (["--duration", "0"], 2, "--duration takes"),
    (["--duration", "nan"], 2, "--duration takes"),
    (["--ring-mb", "0"], 2, "--ring-mb takes"),
    (["--ring-mb", "-1"], 2, "--ring-mb takes"),
    (["--html", "/nonexistent-dir-heapline/r.html"], 73, "does not exist"),
    (["--html", "/tmp"], 73, "is a directory"),
])
def test_options_are_checked_before_the_target_runs(tmp_path, args: list[str], code: int, says: str) -> None:
    marker = tmp_path / "ran"
    trace = tmp_path / "x.trace"
    command = [] if "-p" in args else ["--", "/bin/sh", "-c", f"touch {marker}"]
    r = run_heapline("record", "-o", str(trace), *args, *command)
    assert r.returncode == code and says in r.stderr and one_sentence(r.stderr), r.stderr
    assert not marker.exists() and not trace.exists(), "nothing may run or be written before the options are checked"


@needs_root
@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("runuser") is None, reason="needs strace, runuser")
def test_ptrace_refused_is_said_as_such(tmp_path) -> None:
    """Not root and not the owner: strace's attach is refused by the kernel, and heapline says so
    (not that strace is missing)."""
    target = subprocess.Popen(["sleep", "30"])
    try:
        r = subprocess.run(["runuser", "-u", "nobody", "--", *HEAPLINE, "record", "--backend", "strace",
                            "-o", "/tmp/heapline-nobody.trace", "-p", str(target.pid)],
                           capture_output=True, text=True, timeout=60, cwd="/tmp")
        assert r.returncode == 21 and "does not let strace trace" in r.stderr and one_sentence(r.stderr), r.stderr
        assert target.poll() is None
    finally:
        target.kill()
        subprocess.run(["rm", "-f", "/tmp/heapline-nobody.trace"])


@needs_root
def test_record_shows_what_came_from_the_target_as_text(tmp_path) -> None:
    """An output path and a command line that are markup and terminal escapes (heapline issue 13):
    the status lines and the error sentence show them as text, ESC as \\x1b."""
    from tracer.units import literal

    def visible(text: str) -> bool:
        return "\x1b" not in text and "\x07" not in text

    where = tmp_path / "d[" / "b]"  # d[/b]/t.trace
    where.mkdir(parents=True)
    out = str(where / "t.trace")
    argv = ["/bin/echo", "x=[...]; del x", "[bold]b[/bold]", "\x1b]0;PWNED\x07\x1b[2J"]
    r = run_heapline("record", "-o", out, "--", *argv, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"heapline: wrote {out}: " in r.stderr and visible(r.stderr)
    r = run_heapline("summary", out, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0 and visible(r.stdout)
    assert "'x=[...]; del x' '[bold]b[/bold]' '\\x1b]0;PWNED\\x07\\x1b[2J'" in r.stdout.splitlines()[0]
    missing = "./no\x1b[2J[/b]"
    r = run_heapline("record", "-o", str(tmp_path / "x.trace"), "--", missing)
    assert r.returncode == 127 and r.stderr == f"heapline: command not found: {literal(missing)}\n"


def _memory_cgroup(tmp_name: str) -> str | None:
    """A new memory cgroup below this process's own (v2 or v1), or None where none can be made."""
    for line in open("/proc/self/cgroup").read().splitlines():
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            base, limit = "/sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(","):
            base, limit = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        where = os.path.join(base + path, tmp_name)
        try:
            os.mkdir(where)
            return where if os.path.exists(os.path.join(where, limit)) else None
        except OSError:
            continue
    return None


@needs_root
def test_a_trace_too_large_for_its_cgroup_gets_a_sentence(tmp_path) -> None:
    """Under a real memory limit: a summary that would need more is refused before it reads
    (exit 69, one sentence), and the same trace under a limit it fits in is summarized."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from report_bench import synthesize

    trace = str(tmp_path / "big.trace")
    events = synthesize(trace, 3_000_000)
    cg = _memory_cgroup(f"heapline-test-{os.getpid()}")
    if cg is None:
        pytest.skip("no memory cgroup can be made here")
    limit = "memory.max" if os.path.exists(os.path.join(cg, "memory.max")) else "memory.limit_in_bytes"
    try:
        def inside() -> None:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        for mib, code in ((500, 69), (1600, 0)):
            with open(os.path.join(cg, limit), "w") as f:
                f.write(str(mib << 20))
            r = run_heapline("summary", trace, preexec_fn=inside)
            assert r.returncode == code, (mib, r.returncode, r.stderr[-500:])
            if code:
                assert f"holds {events:,} events: a summary needs about" in r.stderr and one_sentence(r.stderr)
    finally:
        os.rmdir(cg)
