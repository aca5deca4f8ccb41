"""The named fields of each event kind (tracer/fields.py) against records built field by field, and
the rule that analysis and drawing read events only through them."""

from __future__ import annotations

import ast

import numpy as np
from helpers import ROOT

from tracer import fields as ef
from tracer.decode import format_call
from tracer.events import Kind, make


def rows(*records: np.void) -> np.ndarray:
    return np.array(records)


def test_syscall_fields() -> None:
    ev = rows(make(Kind.MMAP, 1, 10, 10, 0, 5000, 3, 0x22, 0xFFFF_FFFF, 4096, ret=0x7F00_0000_0000))
    assert ef.mmap.length(ev).tolist() == [5000]
    assert ef.mmap.prot(ev).tolist() == [3] and ef.mmap.flags(ev).tolist() == [0x22]
    assert ef.mmap.fd(ev).tolist() == [-1] and ef.mmap.offset(ev).tolist() == [4096]
    assert ef.mmap.result(ev).tolist() == [0x7F00_0000_0000]
    ev = rows(make(Kind.MREMAP, 1, 10, 10, 0x1000, 8192, 4096, 1, 0, ret=0x1000))
    assert (ef.mremap.old_addr(ev)[0], ef.mremap.old_length(ev)[0], ef.mremap.new_length(ev)[0]) == (0x1000, 8192, 4096)
    assert ef.page_up(np.array([1, 4096, 4097], np.uint64), 4096).tolist() == [4096, 4096, 8192]


def test_ok_is_the_kernel_errno_range() -> None:
    ev = rows(*(make(Kind.MUNMAP, 1, 1, 1, 0, 0, ret=r) for r in (0, -1, -4095, -4096, 0x7F00_0000_0000)))
    assert ef.ok(ev).tolist() == [True, False, False, True, True]


def test_process_fields() -> None:
    ev = rows(make(Kind.EXIT, 1, 7, 7, 3, 1, 1, 0), make(Kind.EXIT, 2, 8, 9, 0, 0, 0, 9))
    assert ef.exits.last_task(ev).tolist() == [True, False]
    assert [ef.exits.code_at(ev, i) for i in range(2)] == [3, None]
    assert ef.exits.signal(ev).tolist() == [0, 9]
    ev = rows(make(Kind.FORK, 1, 7, 7, 12, 0, 1, 1), make(Kind.FORK, 1, 7, 7, 13, 0x4100, 0, 1))
    assert ef.forks.child(ev).tolist() == [12, 13] and ef.forks.thread(ev).tolist() == [True, False]


def test_allocator_fields() -> None:
    ev = rows(make(Kind.MALLOPT, 1, 1, 1, (-3) & (2**64 - 1), 65536, ret=1),
              make(Kind.MALLOPT, 1, 1, 1, 1, (-1) & (2**64 - 1), ret=0))
    assert ef.mallopt.param(ev).tolist() == [-3, 1] and ef.mallopt.value(ev).tolist() == [65536, -1]
    assert ef.mallopt.accepted(ev).tolist() == [True, False]
    assert format_call(ev[0]) == "mallopt(M_MMAP_THRESHOLD, 65536) = 1"
    ev = rows(make(Kind.MALLOC, 1, 1, 1, 100, ret=0x5000), make(Kind.CALLOC, 1, 1, 1, 3, 7, ret=0x6000),
              make(Kind.REALLOCARRAY, 1, 1, 1, 0x5000, 4, 5, ret=0x7000),
              make(Kind.POSIX_MEMALIGN, 1, 1, 1, 0x9000, 64, 33, 0x8000, ret=0),
              make(Kind.POSIX_MEMALIGN, 1, 1, 1, 0x9000, 64, 33, 0x8040, ret=12),
              make(Kind.FREE, 1, 1, 1, 0x6000))
    assert ef.blocks.requested_size(ev).tolist() == [100, 21, 20, 33, 33, 0]
    assert ef.blocks.pointer_out(ev).tolist()[:5] == [0x5000, 0x6000, 0x7000, 0x8000, 0]
    assert ef.blocks.pointer_in(ev).tolist()[5] == 0x6000


def test_analysis_and_viz_read_events_through_named_fields() -> None:
    raw = {f"a{i}" for i in range(6)}
    found = []
    for path in sorted([*(ROOT / "tracer" / "analysis").rglob("*.py"), *(ROOT / "tracer" / "commands").rglob("*.py"),
                        *(ROOT / "viz").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                    and isinstance(node.slice, ast.Constant) and node.slice.value in raw):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {node.slice.value}")
    assert not found, "\n".join(found)
