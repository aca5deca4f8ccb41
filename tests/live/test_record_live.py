"""Recording behaviour a user sees live: losses, --duration, the status line."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import numpy as np
from helpers import HEAPLINE, ROOT, needs_root, run_heapline, workload

from tracer.events import Kind
from tracer.tracefile import open_trace


@needs_root
def test_losses_are_counted_never_silent(tmp_path) -> None:
    """A ring buffer the recorder does not drain in time: every record that did not fit is counted.

    The recorder is stopped (SIGSTOP) for half a second while the workload runs, so the 1 MiB ring
    overflows whatever the speed of this machine's syscalls and of the recorder's drain."""
    n = 400_000
    trace = str(tmp_path / "l.trace")
    rec = subprocess.Popen([*HEAPLINE, "record", "--backend", "bpf", "--ring-mb", "1", "-o", trace, "--",
                            workload("mmap_churn"), str(n)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    err = ""
    while "recording:" not in err:
        line = rec.stderr.readline()
        assert line, err
        err += line
    time.sleep(0.2)
    rec.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    rec.send_signal(signal.SIGCONT)
    err += rec.stderr.read()
    assert rec.wait(timeout=120) == 0, err
    t = open_trace(trace)
    pid = t.header["pid"]
    ev = t.events[t.events["pid"] == pid]
    got = int(np.isin(ev["kind"], [Kind.MMAP, Kind.MUNMAP]).sum())
    lost = t.end["lost_total"]
    assert lost > 0, "a 1 MiB ring drained every 50 ms cannot hold this rate"
    assert got + lost >= 2 * n  # nothing disappears without being counted
    s = json.loads(run_heapline("summary", trace, "--json").stdout)
    assert s["events"]["lost"] == lost and sum(s["trace"]["lost_per_cpu"].values()) == lost
    assert "lost" in run_heapline("summary", trace).stdout


@needs_root
def test_duration_stops_an_attach_and_leaves_the_target(tmp_path) -> None:
    prog = subprocess.Popen([workload("phases"), "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        prog.stdout.readline()
        trace = str(tmp_path / "d.trace")
        t0 = time.monotonic()
        r = run_heapline("record", "-q", "-o", trace, "-p", str(prog.pid), "--duration", "1")
        assert r.returncode == 0, r.stderr
        assert 1.0 <= time.monotonic() - t0 < 30
        assert prog.poll() is None
        t = open_trace(trace)
        assert t.complete and t.end["stop_reason"] == "duration"
        assert t.header["snapshot"]["rss"]["anon"] > 0
    finally:
        prog.kill()


@needs_root
def test_status_line_on_a_terminal(tmp_path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    trace = str(tmp_path / "s.trace")
    rec = subprocess.Popen([*HEAPLINE, "record", "-o", trace, "--", workload("mmap_churn"), "400000"],
                           cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif rec.poll() is not None:
            break
    out = rec.stdout.read().decode()
    assert rec.wait(timeout=60) == 0
    os.close(master)
    text = seen.decode(errors="replace")
    assert "events" in text and "brk 0x" in text and "rss anon" in text, text[-500:]
    assert "HL done" in out  # the target's stdout is untouched by the status line
