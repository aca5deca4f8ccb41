"""Drain a BPF ring buffer of fixed-size records straight into numpy, without a callback per event.

The kernel's BPF_MAP_TYPE_RINGBUF is mapped into our address space: one page holding the
consumer position (which we advance), one read-only page holding the producer position. The data
area follows, twice in a row in the kernel (a record that wraps around the end reads contiguously);
each drain maps only the window of it that holds the committed records, and unmaps it once they
are copied out: the recorder's RSS holds what it reads, not the whole ring (twice) for its life. Each
record is an 8-byte header (length with BUSY and DISCARD bits, page offset) followed by the
payload, padded to 8 bytes. With fixed-size payloads the bytes between the two positions are an
array of one numpy dtype: a drain is a view, a check of the headers and one copy.

A record whose BUSY bit is still set is being written (its producer may have been preempted):
the drain stops there and takes it next time, so records are never torn or skipped.

Memory ordering: written for x86-64, whose loads are not reordered with other loads nor with
later stores, which is what the kernel's acquire/release protocol needs from the consumer.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

from tracer.columns import CHUNK, Columns
from tracer.events import EVENT_DTYPE
from tracer.record.backends.bpf.abi import BATCH_DTYPE, BATCH_SLOTS, NOT_BATCHED, OPTIONAL, PER_BATCH

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = np.dtype([("hdr_len", "<u4"), ("hdr_pgoff", "<u4")])


class RingReader:
    """``payload``: the dtype of every record; with ``batch`` set, each record is a batch of events
    (:func:`committed_batches`) and :meth:`drain` returns the events."""

    def __init__(self, map_fd: int, data_size: int, payload: np.dtype, batch: bool = False) -> None:
        if data_size & (data_size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self.size = data_size
        self.mask = data_size - 1
        self.payload = payload
        self.record = np.dtype(HEADER.descr + [("ev", payload)])
        if self.record.itemsize % 8:
            raise ValueError("payload must be a multiple of 8 bytes")
        self._fd = map_fd
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.page = page
        self.batch = batch
        self.drained = 0

    def _positions(self) -> tuple[int, int]:
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        prod = struct.unpack_from("<Q", self._prod, 0)[0]
        return cons, prod

    def pending_bytes(self) -> int:
        cons, prod = self._positions()
        return prod - cons

    def drain(self, max_records: int | None = None) -> Columns:
        """Copy out every committed record (payload only, as columns) and hand the space back."""
        cons, prod = self._positions()
        avail = prod - cons
        if avail <= 0:
            return Columns.empty()
        rs = self.record.itemsize
        n = avail // rs
        if max_records is not None:
            n = min(n, max_records)
        start = cons & self.mask
        first = start & ~(self.page - 1)  # the window: whole pages of the data area's double mapping
        length = (start + n * rs - first + self.page - 1) & ~(self.page - 1)
        window = mmap.mmap(self._fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=2 * self.page + first)
        try:
            words = np.frombuffer(window, dtype=np.uint8, count=n * rs, offset=start - first)
            words = words.view(np.uint64).reshape(n, rs // 8)
            out, n = (committed_batches if self.batch else committed)(words, self.payload.itemsize)
            del words  # the records were copied out: nothing views the window any more
        finally:
            try:
                window.close()
            except BufferError:  # a view survived an error: the mapping goes with it
                pass
        struct.pack_into("<Q", self._cons, 0, cons + n * rs)
        self.drained += len(out)
        return out

    def close(self) -> None:
        self._prod.close()
        self._cons.close()


def committed(words: np.ndarray, size: int) -> tuple[Columns, int]:
    """The committed records among ``words`` (records as rows of 64-bit words, header first), as
    columns, and how many records were consumed: up to the first one still being written."""
    n = len(words)
    rows = np.empty((words.shape[1], n), dtype=np.uint64)
    keep: np.ndarray | None = None
    for c0 in range(0, n, CHUNK):
        part = words[c0 : c0 + CHUNK]
        # headers first: a record's payload is read only after its header said it is committed
        # (x86 does not reorder loads), and a chunk at a time, so the payload is in cache then
        lens = (part[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        if not (lens == size).all():  # busy, discarded or foreign records
            busy = np.flatnonzero(lens & BUSY_BIT)
            if len(busy):  # still being written: it and what follows are taken next time
                n = c0 + int(busy[0])
                lens, part = lens[: busy[0]], part[: busy[0]]
            if ((lens & ~np.uint32(BUSY_BIT | DISCARD_BIT)) != size).any():
                raise RuntimeError("ring buffer holds a record of unexpected size; probe and reader disagree")
            if keep is None:
                keep = np.ones(len(words), dtype=bool)
            keep[c0 : c0 + len(part)] = (lens & DISCARD_BIT) == 0
        np.copyto(rows[:, c0 : c0 + len(part)], part.T)
        if c0 + len(part) == n and n < len(words):
            break
    rows = rows[:, :n] if keep is None else rows[:, :n][:, keep[:n]]
    return Columns.from_rows(np.ascontiguousarray(rows), HEADER.itemsize), n



def committed_batches(words: np.ndarray, size: int) -> tuple[Columns, int]:
    """Like :func:`committed` for records that are batches (probes/heapline.h ``struct batch``, of
    ``size`` bytes): the written events of the committed batches, in order, and how many ring
    records were consumed."""
    lens = (words[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    busy = np.flatnonzero(lens & BUSY_BIT)
    n = int(busy[0]) if len(busy) else len(words)
    lens = lens[:n]
    if ((lens & ~np.uint32(BUSY_BIT | DISCARD_BIT)) != size).any():
        raise RuntimeError("ring buffer holds a record of unexpected size; probe and reader disagree")
    records = words[:n].view(np.dtype(HEADER.descr + [("b", BATCH_DTYPE)])).reshape(n)["b"]
    kept = (lens & DISCARD_BIT) == 0
    return batch_events(records if kept.all() else records[kept]), n


def batch_events(batches: np.ndarray) -> Columns:
    """The written events of ``batches`` (an array of BATCH_DTYPE): each field of a full batch is
    one contiguous run already. The batches are taken in the order of their first events: the
    records of one CPU are in time order, so batches that do not overlap in time (one thread
    moving between CPUs) come out sorted, in the copy the extraction makes anyway. Copying out of
    the ring is most of the cost, so columns that no batch used are zeros, not read."""
    counts = batches["n"].astype(np.int64)
    if (counts > BATCH_SLOTS).any():
        raise RuntimeError("a batch claims more records than it holds; probe and reader disagree")
    first = batches["ts"][:, 0]
    order = None if len(first) < 2 or bool((first[1:] >= first[:-1]).all()) else np.argsort(first, kind="stable")
    if order is not None:
        counts = counts[order]
    written = None if (counts == BATCH_SLOTS).all() else np.arange(BATCH_SLOTS)[None, :] < counts[:, None]
    used = int(np.bitwise_or.reduce(batches["used"])) if len(batches) else 0
    n = int(counts.sum())
    cols = {}
    for name in EVENT_DTYPE.names:
        if name in NOT_BATCHED or (name in OPTIONAL and not used & OPTIONAL[name]):
            cols[name] = np.zeros(n, dtype=EVENT_DTYPE[name])
        elif name in PER_BATCH:
            per = batches[name] if order is None else batches[name][order]
            cols[name] = np.repeat(per.astype(EVENT_DTYPE[name]), counts)
        else:
            field = batches[name] if order is None else batches[name][order]  # the reordering is the copy
            # always a copy: one full batch is contiguous in the ring already, and a view of it would
            # be overwritten once the space is handed back (and keep the ring from closing)
            cols[name] = field.reshape(-1).copy() if written is None else field[written]
    return Columns(cols)
