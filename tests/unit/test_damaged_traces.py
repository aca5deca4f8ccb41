"""Damaged and hostile traces (tests/support/damage.py, seeded): every reading command either
refuses one with exit 65 and one sentence, or reads what it can and exits 0; never a traceback,
never more than 10 s or a few GiB of memory for one command."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from damage import variants
from helpers import ROOT

from tracer.commands import compare, explain, report, summary
from tracer.errors import Exit, HeaplineError, TraceFileError
from tracer.tracefile import open_trace

SAMPLES = [ROOT / "traces" / f"{name}.trace" for name in ("forker", "phases-attach", "phases-strace",
                                                           "scenario-realloc-grow")]
SEED = 13
LIMIT_S = 10.0
MEMORY = 3 << 30  # address space a command may take beyond what the test process holds


class TookTooLong(BaseException):
    """A command ran past LIMIT_S (a BaseException: no ``except Exception`` of the code swallows it)."""


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run under a memory limit (RLIMIT_AS, what the test holds plus MEMORY) and a time limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + MEMORY
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))

    def expire(signum: int, frame: Any) -> None:
        raise TookTooLong

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _commands(tmp: str) -> dict[str, Callable[[str], int]]:
    clean = str(SAMPLES[0])

    def quiet(_: object) -> None:
        pass

    return {
        "summary": lambda p: summary.run(quiet, p),
        "summary --json": lambda p: summary.run(quiet, p, as_json=True),
        "explain": lambda p: explain.run(quiet, p),
        "explain --json": lambda p: explain.run(quiet, p, as_json=True),
        "report": lambda p: report.run(quiet, p, os.path.join(tmp, "r.html")),
        "compare": lambda p: compare.run(quiet, [clean, p], os.path.join(tmp, "c.html")),
    }


def test_every_reading_command_refuses_or_reads_a_damaged_trace(tmp_path) -> None:
    found = variants(SAMPLES, seed=SEED, per_family=25)
    assert len(found) > 300
    commands = _commands(str(tmp_path))
    path = str(tmp_path / "damaged.trace")
    failures: list[str] = []
    outcomes = {"refused": 0, "read": 0}
    for name, data in found:
        with open(path, "wb") as f:
            f.write(data)
        for cmd, run in commands.items():
            out = io.StringIO()
            t0 = time.perf_counter()
            try:
                with guarded(), contextlib.redirect_stdout(out):
                    code = run(path)
            except HeaplineError as e:
                if e.code != Exit.BAD_TRACE or "\n" in e.message or path not in e.message:
                    failures.append(f"{name}: {cmd}: exit {int(e.code)}: {e.message[:200]}")
                outcomes["refused"] += 1
            except BaseException as e:  # a traceback, a memory error, a timeout
                failures.append(f"{name}: {cmd}: {type(e).__name__}: {str(e)[:200]}")
            else:
                if code != 0:
                    failures.append(f"{name}: {cmd}: exit {code}")
                elif cmd.endswith("--json") and not isinstance(json.loads(out.getvalue()), dict):
                    failures.append(f"{name}: {cmd}: printed no JSON object")
                outcomes["read"] += 1
            took = time.perf_counter() - t0
            if took > LIMIT_S:
                failures.append(f"{name}: {cmd}: took {took:.1f} s")
    assert not failures, f"{len(failures)} of {len(found) * len(commands)} runs failed:\n" + "\n".join(failures[:40])
    # both ways out are taken: the test cannot pass by refusing everything, nor by reading everything
    assert outcomes["refused"] > len(found) and outcomes["read"] > len(found)


@functools.cache
def _first_sample_variants() -> dict[str, bytes]:
    return {name.split(":", 1)[1]: data for name, data in variants(SAMPLES[:1], seed=SEED)}


@pytest.mark.parametrize(("name", "why"), [
    ("header-command-50MB", "its header is 50,0"), ("header-deep-list", "its header is nested too deeply"),
    ("bomb-record-batch-prefix=0x4000000000000000", "a compressed buffer claims 4,611,686,018,427,387,904 bytes"),
    ("values-ts-flip-byte7", "it holds a timestamp beyond 2^63 ns"),
    ("values-kind-index=127", "its kind column points outside its dictionary"),
    ("schema-kind-strings", "its column kind is string, not dictionary"),
    ("header-page_size=0", "its header's machine.page_size is 0, outside"),
    ("header-start_ns=1e30", "its header's start_ns is a number, not an integer"),
    ("schema-extra-column", "its columns are not heapline's event columns (an extra column 'x')"),
])
def test_the_damage_of_the_issue_is_refused_saying_what_is_wrong(tmp_path, name: str, why: str) -> None:
    p = tmp_path / "t.trace"
    p.write_bytes(_first_sample_variants()[name])
    with pytest.raises(TraceFileError) as e:
        open_trace(str(p))
    assert str(e.value).startswith(f"{p} is not a readable heapline trace: {why}") and "\n" not in str(e.value)
