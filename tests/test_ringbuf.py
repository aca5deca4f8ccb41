"""Draining ring-buffer records: committed ones only, in order, never past one still being written."""

from __future__ import annotations

import numpy as np
import pytest

from tracer.backends.ringbuf import BUSY_BIT, DISCARD_BIT, HEADER, committed
from tracer.events import EVENT_DTYPE

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
