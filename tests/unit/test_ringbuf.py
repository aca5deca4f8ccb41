"""Draining ring-buffer records: committed ones only, in order, never past one still being written."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.events import EVENT_DTYPE
from tracer.record.backends.bpf.ringbuf import BATCH_SLOTS, BUSY_BIT, DISCARD_BIT, HEADER, committed

RECORD = np.dtype(HEADER.descr + [("ev", EVENT_DTYPE)])


def ring(n: int) -> np.ndarray:
    r = np.zeros(n, dtype=RECORD)
    r["hdr_len"] = EVENT_DTYPE.itemsize
    rng = np.random.default_rng(7)
    for name in EVENT_DTYPE.names:
        r["ev"][name] = rng.integers(0, np.iinfo(EVENT_DTYPE[name]).max, n, dtype=EVENT_DTYPE[name], endpoint=True)
    return r


def words(r: np.ndarray) -> np.ndarray:
    return r.view(np.uint64).reshape(len(r), RECORD.itemsize // 8)


@pytest.mark.parametrize("n", [1, 100, 40000])
def test_every_field_of_every_record(n: int) -> None:
    r = ring(n)
    cols, used = committed(words(r), EVENT_DTYPE.itemsize)
    assert used == n and np.array_equal(cols.to_records(), r["ev"])


def test_stops_at_the_first_busy_record() -> None:
    r = ring(40000)
    r["hdr_len"][20000] |= BUSY_BIT  # a producer preempted mid-write
    r["hdr_len"][30000] |= BUSY_BIT
    cols, used = committed(words(r), EVENT_DTYPE.itemsize)
    assert used == 20000 and np.array_equal(cols.to_records(), r["ev"][:20000])


def test_discarded_records_are_consumed_but_not_returned() -> None:
    r = ring(50)
    r["hdr_len"][[3, 17]] |= DISCARD_BIT
    cols, used = committed(words(r), EVENT_DTYPE.itemsize)
    assert used == 50 and len(cols) == 48
    assert np.array_equal(cols.to_records(), np.delete(r["ev"], [3, 17]))


def test_a_record_of_another_size_is_an_error() -> None:
    r = ring(10)
    r["hdr_len"][4] = 40
    with pytest.raises(RuntimeError):
        committed(words(r), EVENT_DTYPE.itemsize)


def batch_ring(counts: list[int]) -> np.ndarray:
    """Ring records that are batches (probes/heapline.h struct batch) holding ``counts`` events."""
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, OPTIONAL

    rec = np.dtype(HEADER.descr + [("b", BATCH_DTYPE)])
    r = np.zeros(len(counts), dtype=rec)
    r["hdr_len"] = BATCH_DTYPE.itemsize
    r["b"]["n"] = counts
    r["b"]["busy"] = 0
    r["b"]["cpu"] = np.arange(len(counts)) % 3
    ev = ring(len(counts) * BATCH_SLOTS)["ev"].reshape(len(counts), BATCH_SLOTS)
    for name in BATCH_DTYPE.names:
        if name in EVENT_DTYPE.names and BATCH_DTYPE[name].shape:
            r["b"][name] = ev[name]
    for name, bit in OPTIONAL.items():  # as the probe sets them: a value that is not 0 was written
        r["b"]["used"] |= np.where(r["b"][name].any(axis=1), bit, 0).astype(np.uint32)
    return r


def batch_records(r: np.ndarray, i: int) -> np.ndarray:
    """The records of batch ``i`` of ``r``, all slots, as EVENT_DTYPE (fields not batched: 0)."""
    out = np.zeros(BATCH_SLOTS, dtype=EVENT_DTYPE)
    for name in r["b"].dtype.names:
        if name in EVENT_DTYPE.names:
            out[name] = r["b"][name][i]  # a field of the batch (cpu) goes to every record
    return out


def test_batches_give_their_written_events_in_order() -> None:
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, committed_batches

    counts = [64, 3, 0, 64, 17]
    r = batch_ring(counts)
    r["hdr_len"][2] |= DISCARD_BIT
    w = r.view(np.uint64).reshape(len(r), r.dtype.itemsize // 8)
    cols, used = committed_batches(w, BATCH_DTYPE.itemsize)
    # in the order of their first events (each batch keeps its own order)
    kept = [i for i in range(len(counts)) if i != 2]
    kept.sort(key=lambda i: int(r["b"]["ts"][i][0]))
    want = np.concatenate([batch_records(r, i)[: counts[i]] for i in kept])
    assert used == 5 and np.array_equal(cols.to_records(), want)


def test_batches_that_do_not_overlap_come_out_sorted() -> None:
    """One thread moving between CPUs: each CPU's batches in order, sent late and interleaved."""
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, committed_batches

    r = batch_ring([64] * 6 + [20])
    ts = np.arange(7 * 64, dtype=np.uint64).reshape(7, 64) * 10 + 1000
    r["b"]["ts"] = ts[[0, 2, 1, 4, 3, 6, 5]]  # arrival order: CPU 0's batches, CPU 1's late ones
    r["b"]["n"][5] = 20  # the last one, partly written, arrives before its predecessor
    r["b"]["n"][6] = 64
    cols, used = committed_batches(r.view(np.uint64).reshape(len(r), -1), BATCH_DTYPE.itemsize)
    assert used == 7 and cols["ts"].tolist() == ts.reshape(-1)[: 6 * 64 + 20].tolist()


def test_batches_stop_at_one_being_written_and_reject_a_wrong_count() -> None:
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, committed_batches

    r = batch_ring([5, 6, 7])
    r["hdr_len"][1] |= BUSY_BIT
    w = r.view(np.uint64).reshape(len(r), r.dtype.itemsize // 8)
    cols, used = committed_batches(w, BATCH_DTYPE.itemsize)
    assert used == 1 and np.array_equal(cols.to_records(), batch_records(r, 0)[:5])
    r["hdr_len"][1] &= ~np.uint32(BUSY_BIT)
    r["b"]["n"][2] = 65
    with pytest.raises(RuntimeError):
        committed_batches(r.view(np.uint64).reshape(len(r), -1), BATCH_DTYPE.itemsize)


def test_columns_no_batch_used_are_not_read() -> None:
    """malloc and free leave aux and a1..a4 zero: a column no batch marked used comes out as
    zeros (it is not read), one any batch used comes through for all of them."""
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, OPTIONAL, committed_batches

    r = batch_ring([64, 64, 30])
    for name in ("aux", "a2", "a3", "a4"):
        r["b"]["used"] &= ~np.uint32(OPTIONAL[name])  # left in the memory, not marked: not read
    r["b"]["a1"][1:] = 0
    r["b"]["used"][1:] &= ~np.uint32(OPTIONAL["a1"])  # only the first batch used a1
    cols, _ = committed_batches(r.view(np.uint64).reshape(len(r), -1), BATCH_DTYPE.itemsize)
    order = np.argsort(r["b"]["ts"][:, 0], kind="stable")
    want = np.concatenate([batch_records(r, i)[: r["b"]["n"][i]] for i in order])
    for name in ("aux", "a2", "a3", "a4", "a5"):
        assert not cols[name].any()
        want[name] = 0
    assert np.array_equal(cols.to_records(), want) and cols["a1"].any()
    assert cols["cpu"].tolist() == np.repeat(r["b"]["cpu"][order], r["b"]["n"][order]).tolist()


def test_one_full_batch_is_copied_out_of_the_ring() -> None:
    """The ring's space is handed back after a drain: no column may be a view of it."""
    from tracer.record.backends.bpf.ringbuf import BATCH_DTYPE, committed_batches

    r = batch_ring([BATCH_SLOTS])
    w = r.view(np.uint64).reshape(len(r), r.dtype.itemsize // 8)
    cols, _ = committed_batches(w, BATCH_DTYPE.itemsize)
    before = cols.to_records().copy()
    w[:] = 0  # the kernel writes new records there
    assert np.array_equal(cols.to_records(), before)
    for name in EVENT_DTYPE.names:
        assert not np.shares_memory(cols[name], w), name
