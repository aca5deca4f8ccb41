"""The values the BPF programs share with the Python have one source, tracer/record/backends/bpf/abi.py:
probes/heapline.h compiles with the flags the loader passes, refuses to without any one of them, and
refuses a struct laid out otherwise than the Python reads it. The system gcc stands in for bcc's
clang: on x86-64 it lays these structs out as BPF does."""

from __future__ import annotations

import ctypes as ct
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import ROOT

from tracer.events import EVENT_DTYPE
from tracer.record.backends.bpf import abi

PROBES = ROOT / "probes"
# the integer types bcc's headers give the programs
WRAPPER = """\
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long s64;
#include "heapline.h"
"""
DEFINE = re.compile(r"^[ \t]*#[ \t]*(?:define|undef)[ \t]+(\w+)", re.MULTILINE)


def compile_header(flags: list[str]) -> subprocess.CompletedProcess[str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: probes/heapline.h cannot be compiled")
    return subprocess.run([gcc, "-fsyntax-only", "-std=gnu11", "-Wall", "-x", "c", f"-I{PROBES}", *flags, "-"],
                          input=WRAPPER, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_heapline_h_compiles_with_the_flags_the_loader_passes() -> None:
    done = compile_header(abi.cflags())
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_without_any_one_flag_heapline_h_does_not_compile() -> None:
    flags = abi.cflags()
    assert len(flags) == len(abi.values()) > 100

    def without(i: int) -> tuple[str, subprocess.CompletedProcess[str]]:
        return flags[i].split("=")[0][2:], compile_header(flags[:i] + flags[i + 1 :])

    compile_header([])  # skips here when there is no gcc
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(without, range(len(flags))))
    accepted = [name for name, done in results if done.returncode == 0]
    assert not accepted, f"heapline.h compiles without {accepted}"
    for name, done in results:
        if name.startswith(("SIZEOF_", "OFFSETOF_")):  # used by a _Static_assert: undeclared there
            assert name in done.stderr, done.stderr
        else:  # named in one of the #error checks
            assert "#error" in done.stderr and "tracer/record/backends/bpf/abi.py" in done.stderr, done.stderr


def test_a_layout_the_python_does_not_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # a wider kind in the Python's record: every later offset and the size differ from struct event
    wider = np.dtype([(n, "<u4" if n == "kind" else EVENT_DTYPE[n]) for n in EVENT_DTYPE.names])
    monkeypatch.setattr(abi, "EVENT_DTYPE", wider)
    done = compile_header(abi.cflags())
    assert done.returncode != 0
    assert "struct event is not the size of" in done.stderr and "struct event .aux is not where" in done.stderr

    class Site(ct.Structure):  # a wider slot in the ctypes mirror of struct site
        _fields_ = [("kind", ct.c_uint16), ("aux", ct.c_uint16), ("slot", ct.c_uint16), ("flags", ct.c_uint8),
                    ("pad", ct.c_uint8)]

    monkeypatch.undo()
    monkeypatch.setattr(abi, "Site", Site)
    done = compile_header(abi.cflags())
    assert done.returncode != 0 and "struct site .slot is not where" in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["OFFSETOF_EVENT_RET", "SIZEOF_BATCH", "OFFSETOF_BATCH_A3", "SIZEOF_SITE_FLAGS"])
def test_one_wrong_layout_value_is_refused(name: str) -> None:
    flags = [f"-D{n}={v + 8 if n == name else v}" for n, v in abi.values().items()]
    done = compile_header(flags)
    assert done.returncode != 0 and "static assertion failed" in done.stderr, done.stderr


def test_the_c_defines_none_of_the_shared_values() -> None:
    sources = sorted([*PROBES.glob("*.c"), *PROBES.glob("*.h")])
    assert {p.name for p in sources} >= {"heapline.h", "common.bpf.c", "syscalls.bpf.c", "alloc.bpf.c"}
    defined = {name: p.name for p in sources for name in DEFINE.findall(p.read_text())}
    assert {"CHECK_FIELD", "RESERVE_TRIES"} <= set(defined)  # what the C keeps to itself is seen
    both = {name: where for name, where in defined.items() if name in abi.values()}
    assert not both, f"defined in probes/ although tracer/record/backends/bpf/abi.py gives them: {both}"


PRELOAD_SOURCE = PROBES / "preload" / "heapline_preload.c"


def compile_preload(flags: list[str]) -> subprocess.CompletedProcess[str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the preload library cannot be compiled")
    return subprocess.run([gcc, "-fsyntax-only", "-std=gnu11", "-Wall", "-Wextra", *flags, str(PRELOAD_SOURCE)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_preload_library_compiles_with_the_flags_make_passes() -> None:
    done = compile_preload(abi.cflags(preload=True))
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_the_preload_library_refuses_to_compile_without_its_ring_values() -> None:
    flags = abi.cflags(preload=True)
    names = set(abi.preload_values())
    for i, flag in enumerate(flags):
        name = flag.split("=")[0][2:]
        if name not in names:
            continue
        done = compile_preload(flags[:i] + flags[i + 1 :])
        assert done.returncode != 0, f"the preload library compiles without {name}"


def test_a_ring_laid_out_otherwise_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # the collector's cursor one word further on than the C keeps it
    header = abi.PRELOAD_HEADER_DTYPE
    names = list(header.names)
    offsets = [header.fields[n][1] + (8 if n == "tail" else 0) for n in names]
    moved = np.dtype({"names": names, "formats": [header.fields[n][0] for n in names], "offsets": offsets,
                      "itemsize": header.itemsize})
    monkeypatch.setattr(abi, "PRELOAD_HEADER_DTYPE", moved)
    done = compile_preload(abi.cflags(preload=True))
    assert done.returncode != 0 and "struct ring .tail is not where" in done.stderr, done.stderr
