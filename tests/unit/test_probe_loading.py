"""What the two loaders need from the probe sources and refuse, without loading anything."""

from __future__ import annotations

import ctypes as ct
import re

import pytest
from helpers import ROOT

from tracer.record.backends.bpf import abi, bccload, coreload

PROBES = ROOT / "probes"


def test_map_operations_are_written_in_bccs_dialect() -> None:
    text = "u8 *st = LOOKUP(traced, &tgid);\n#define X LOOKUP(a, b)\nRB_OUTPUT(alloc_ring, b, sizeof(*b), 1)"
    assert bccload.bcc_dialect(text).split("\n") == [
        "u8 *st = traced.lookup(&tgid);", "#define X LOOKUP(a, b)", "alloc_ring.ringbuf_output(b, sizeof(*b), 1)"]


def test_no_map_operation_is_left_for_bcc_to_refuse() -> None:
    """Every map operation of the sources is one of loader.h's (bcc would refuse it in a macro, clang
    would not know bcc's methods)."""
    for part in ("common.bpf.c", "syscalls.bpf.c", "alloc.bpf.c"):
        text = (PROBES / part).read_text()
        assert not re.search(r"\w\.(lookup|update|delete|ringbuf_\w+|task_storage_get|get_stackid)\(", text), part
        rewritten = bccload.bcc_dialect(text)
        assert not re.search(r"\b(" + "|".join(bccload.DIALECT) + r")\(", rewritten), part


def test_a_missing_object_says_make_builds_it(tmp_path) -> None:
    with pytest.raises(coreload.CoreUnavailable, match="make builds it"):
        coreload.CoreObject(str(tmp_path / "none.o"), ring_bytes=4096, spare_bytes=4096, alloc_ring_bytes=4096,
                            config=coreload.Config(), alloc=False, stack_entries=1)  # fmt: skip


def test_the_stamp_follows_every_shared_value(monkeypatch) -> None:
    before = abi.stamp()
    assert before == abi.stamp() and 0 < before < 1 << 63
    monkeypatch.setattr(abi, "BATCH_SLOTS", abi.BATCH_SLOTS * 2)
    assert abi.stamp() != before


def test_config_and_rss_state_are_the_c_layouts() -> None:
    assert ct.sizeof(coreload.Config) == 5 * 8
    assert ct.sizeof(coreload.RssState) == 64 and coreload.RssState.pid.offset == 56
