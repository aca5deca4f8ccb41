"""StraceBackend end to end: real strace on small C programs compiled by the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tracer.columns import Columns
from tracer.events import Kind
from tracer.record.backends.base import LaunchSpec, Options
from tracer.record.backends.strace import StraceBackend, tracer_of
from tracer.record.procfs import time_ns

pytestmark = [
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (it builds the target)"),
]

MAP_LEN = 7 * 4096 + 123
MINUS1 = 0xFFFF_FFFF_FFFF_FFFF

PROGRAM = r"""
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void put(const char *tag, uintptr_t v) {
    char buf[64];
    size_t n = strlen(tag);
    memcpy(buf, tag, n);
    buf[n++] = '=';
    buf[n++] = '0';
    buf[n++] = 'x';
    char digits[16];
    int k = 0;
    do { digits[k++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (k) buf[n++] = digits[--k];
    buf[n++] = '\n';
    write(1, buf, n);
}

int main(int argc, char **argv) {
    void *brk0 = sbrk(0);
    sbrk(3 * 4096);
    void *brk1 = sbrk(0);
    void *m = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    put("brk0", (uintptr_t)brk0);
    put("brk1", (uintptr_t)brk1);
    put("mmap", (uintptr_t)m);
    memset(m, 1, MAP_LEN);
    usleep(100 * 1000);
    if (argc > 1 && strcmp(argv[1], "kill") == 0)
        raise(SIGKILL);
    munmap(m, MAP_LEN);
    return 3;
}
"""

LOOPER = r"""
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    for (;;) {
        void *p = mmap(NULL, MAP_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, MAP_LEN);
        usleep(2000);
    }
}
"""


def build(tmp_path: Path, name: str, source: str) -> str:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run(["gcc", "-O1", f"-DMAP_LEN={MAP_LEN}", "-o", str(exe), str(src)], check=True)
    return str(exe)


@pytest.fixture
def program(tmp_path: Path) -> str:
    return build(tmp_path, "target", PROGRAM)


def record(path: str, *args: str, no_aslr: bool = False) -> tuple[StraceBackend, int, np.ndarray]:
    """Like the recorder: poll until exit_status() is known, one last poll, then stop()."""
    backend = StraceBackend(Options(rss_interval_ns=1_000_000))
    parts = []
    try:
        pid = backend.launch(LaunchSpec(path, [path, *args], no_aslr=no_aslr))
        deadline = time.monotonic() + 30
        while backend.exit_status() is None and time.monotonic() < deadline:
            parts.append(backend.poll())
            time.sleep(0.005)
        parts.append(backend.poll())
    finally:
        backend.stop()
    assert len(backend.poll()) == 0  # everything was delivered before stop()
    return backend, pid, Columns.concat(parts).to_records()


def printed(out: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in re.findall(r"^(\w+)=(0x[0-9a-f]+)$", out, re.M)}


def test_launch_records_exact_brk_and_mmap(program: str, capfd: pytest.CaptureFixture[str]) -> None:
    t0 = time_ns()
    backend, pid, ev = record(program)
    t1 = time_ns()
    seen = printed(capfd.readouterr().out)
    assert set(seen) == {"brk0", "brk1", "mmap"}
    assert backend.exit_status() == 3
    assert backend.lost() == {-1: 0}
    details = backend.info().details
    assert details["unparsed"] == 0, details["unparsed_lines"]

    assert set(ev["pid"]) == {pid}
    assert np.all((ev["ts"] >= t0) & (ev["ts"] <= t1))
    calls = ev[ev["kind"] != Kind.RSS]
    assert calls[0]["kind"] == Kind.EXEC and calls[0]["a0"] == pid
    last = calls[-1]
    assert last["kind"] == Kind.EXIT and (last["a0"], last["a1"], last["a2"]) == (3, 1, 1)

    brk = ev[ev["kind"] == Kind.BRK]
    assert seen["brk0"] in brk["ret"].tolist()
    grow = brk[brk["a0"] == seen["brk1"]]
    assert len(grow) == 1 and grow[0]["ret"] == seen["brk1"] == seen["brk0"] + 3 * 4096

    mmap = ev[(ev["kind"] == Kind.MMAP) & (ev["a1"] == MAP_LEN)]
    assert len(mmap) == 1
    m = mmap[0]
    assert (m["a0"], m["a2"], m["a3"], m["a4"], m["a5"], m["ret"]) == (0, 3, 0x22, MINUS1, 0, seen["mmap"])
    assert m["dur"] > 0

    unmap = ev[(ev["kind"] == Kind.MUNMAP) & (ev["a0"] == seen["mmap"])]
    assert len(unmap) == 1 and unmap[0]["a1"] == MAP_LEN and unmap[0]["ret"] == 0

    rss = ev[ev["kind"] == Kind.RSS]
    assert len(rss) >= 1 and all(rss["a0"] > 0)  # the target sleeps 100 ms with MAP_LEN touched


def test_no_aslr_is_inherited_through_strace(program: str, capfd: pytest.CaptureFixture[str]) -> None:
    record(program, no_aslr=True)
    first = printed(capfd.readouterr().out)
    record(program, no_aslr=True)
    second = printed(capfd.readouterr().out)
    assert first == second


def test_killed_target_exit_status(program: str, capfd: pytest.CaptureFixture[str]) -> None:
    backend, pid, ev = record(program, "kill")
    assert backend.exit_status() == 128 + 9
    exits = ev[ev["kind"] == Kind.EXIT]
    assert len(exits) == 1 and exits[0]["pid"] == pid
    assert (exits[0]["a1"], exits[0]["a2"], exits[0]["a3"]) == (0, 1, 9)


def _may_attach() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() == "0"
    except OSError:
        return True


@pytest.fixture
def looper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([build(tmp_path, "looper", LOOPER)])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(not _may_attach(), reason="ptrace attach is restricted (yama ptrace_scope) for non-root")
def test_attach_and_detach_leaves_target_running(looper: subprocess.Popen[bytes]) -> None:
    backend = StraceBackend(Options())
    backend.attach(looper.pid)
    parts = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            parts.append(backend.poll())
            if sum(int(((p["kind"] == Kind.MUNMAP) & (p["a1"] == MAP_LEN)).sum()) for p in parts) >= 3:
                break
            time.sleep(0.01)
    finally:
        backend.stop()
    parts.append(backend.poll())
    ev = Columns.concat(parts).to_records()
    assert backend.exit_status() is None
    assert set(ev["pid"]) == {looper.pid}
    mmaps = ev[(ev["kind"] == Kind.MMAP) & (ev["a1"] == MAP_LEN)]
    assert len(mmaps) >= 2 and all(mmaps["ret"] > 0)
    assert len(ev[ev["kind"] == Kind.RSS]) >= 1
    assert backend.info().details["unparsed"] == 0
    time.sleep(0.05)
    assert looper.poll() is None  # still running, and no longer traced
    assert tracer_of(looper.pid) == 0
