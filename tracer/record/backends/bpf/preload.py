"""The in-process allocator path: probes/preload/heapline_preload.c, preloaded into a launched
command, writes one record per allocator call into a shared-memory ring this module creates and
drains with numpy at every poll (the layout: abi.py PRELOAD_HEADER_DTYPE).

The records are EVENT_DTYPE records exactly as probes/alloc.bpf.c writes them, so the rest of
heapline cannot tell the two paths apart. Syscalls stay with the eBPF probes; only launched
commands can be preloaded (an attached process keeps the uprobes).

A slot is taken once its sequence word says it was committed; the drain stops at the first slot
still being written and takes it at the next poll. A slot whose writer died while filling it (a
process killed mid-call) would stop the drain for good: once its sequence word has named a pid
that no longer exists for a few polls, the slot is skipped and counted lost.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracer.columns import Columns
from tracer.events import EVENT_DTYPE, Kind
from tracer.record.backends.bpf.abi import (
    PRELOAD_BLOCK,
    PRELOAD_CLAIMED,
    PRELOAD_HEADER_DTYPE,
    PRELOAD_MAGIC,
    PRELOAD_VERSION,
)

ENV_RING = "HEAPLINE_PRELOAD_RING"
LIBRARY = "libheapline_preload.so"
SHM_DIR = "/dev/shm"
STALL_POLLS = 20  # polls a slot of a dead writer holds the drain before it is skipped (1 s)
MAP_SHARED = 0x01


class PreloadUnavailable(Exception):
    """The preload path cannot trace this command; the message says why, in one sentence."""


def library_path(probes: Path) -> Path:
    """The built library (``make`` builds it next to its source)."""
    return probes / "preload" / LIBRARY


def ring_capacity(ring_bytes: int) -> int:
    """Slots of a ring of about ``ring_bytes``: a power of two (each slot: a record and its word)."""
    per_slot = EVENT_DTYPE.itemsize + 8
    slots = max(1024, ring_bytes // per_slot)
    return 1 << (slots.bit_length() - 1)


@dataclass
class Losses:
    ring_full: int = 0  # the writers found no room (not blocking)
    writer_died: int = 0  # claimed slots their writer never finished


class PreloadRing:
    """The shared-memory file: created empty, mapped here, its path given to the command."""

    def __init__(self, capacity: int, block: bool) -> None:
        self.capacity = capacity
        self.mask = capacity - 1
        self.block = block
        self.bytes = PRELOAD_HEADER_DTYPE.itemsize + capacity * (8 + EVENT_DTYPE.itemsize)
        fd, self.path = _create(self.bytes)
        try:
            self._mm = mmap.mmap(fd, self.bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._header = np.frombuffer(self._mm, PRELOAD_HEADER_DTYPE, 1)
        off = PRELOAD_HEADER_DTYPE.itemsize
        self._seqs = np.frombuffer(self._mm, np.uint64, capacity, off)
        self._slots = np.frombuffer(self._mm, EVENT_DTYPE, capacity, off + 8 * capacity)
        # the same slots as rows of 64-bit words: a drain transposes them into columns in one pass
        self._words = np.frombuffer(self._mm, np.uint64, capacity * EVENT_DTYPE.itemsize // 8,
                                    off + 8 * capacity).reshape(capacity, EVENT_DTYPE.itemsize // 8)
        h = self._header
        h["capacity"], h["flags"] = capacity, PRELOAD_BLOCK if block else 0
        h["version"], h["collector"] = PRELOAD_VERSION, os.getpid()
        h["magic"] = PRELOAD_MAGIC  # last: a writer maps only a ring whose magic is there
        self.losses = Losses()
        self._stalled_at = -1
        self._stalled_polls = 0

    def env(self, library: Path, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the library preloaded first (an allocator the user preloads comes after it,
        and is the one its lookups find) and the ring's path."""
        preload = env.get("LD_PRELOAD", "")
        return {**env, "LD_PRELOAD": f"{library}:{preload}" if preload else str(library), ENV_RING: self.path}

    def drain(self, final: bool = False) -> Columns:
        """The records committed since the last drain. ``final``: the last drain; the committed
        records after a slot still claimed are taken too, and the claimed slots whose writer is
        gone are counted lost (those of a live writer are calls made as tracing stopped)."""
        h = self._header
        tail = int(h["tail"][0])
        head = int(h["head"][0])
        parts = []
        at = tail
        # the slots from tail to head, as at most two runs of the mapping (before and after the wrap)
        while at < head:
            lo = at & self.mask
            hi = min(lo + head - at, self.capacity)
            seqs = self._seqs[lo:hi]
            ok = seqs == np.arange(at + 1, at + 1 + hi - lo, dtype=np.uint64)
            k = hi - lo if bool(ok.all()) else int(np.argmin(ok))
            if k:
                parts.append(Columns.from_words(self._words[lo : lo + k], 0))
            at += k
            if k < hi - lo:
                break
        if at < head and (final or self._writer_gone(at)):
            if final:
                parts += self._after_stall(at, head)
                at = head
            else:
                self.losses.writer_died += 1
                self._stalled_at, self._stalled_polls = -1, 0
                at += 1
        h["tail"] = at  # after the copy: the writers may reuse the slots from here
        return Columns.concat(parts)  # in the order the calls claimed their slots

    def _after_stall(self, at: int, head: int) -> list[Columns]:
        """The last drain, from a slot not committed: the committed records after it, and the
        uncommitted slots whose writer is gone counted lost."""
        seq = np.arange(at, head, dtype=np.uint64)
        idx = seq & np.uint64(self.mask)
        good = self._seqs[idx] == seq + np.uint64(1)
        words = self._seqs[idx[~good]]
        claimed = (words & np.uint64(PRELOAD_CLAIMED)) != 0
        pids = words[claimed] & np.uint64(0xFFFF_FFFF)
        self.losses.writer_died += int((~claimed).sum()) + sum(not _alive(int(p)) for p in pids)
        more = Columns.from_records(self._slots[idx[good]])
        return [more] if len(more) else []

    def _writer_gone(self, at: int) -> bool:
        """Whether the slot ``at`` has been held by a writer that no longer exists for STALL_POLLS."""
        word = int(self._seqs[at & self.mask])
        if not word & PRELOAD_CLAIMED:
            return False
        if at != self._stalled_at:
            self._stalled_at, self._stalled_polls = at, 0
        pid = word & 0xFFFF_FFFF
        if _alive(pid):
            self._stalled_polls = 0
            return False
        self._stalled_polls += 1
        return self._stalled_polls >= STALL_POLLS

    def stop_blocking(self) -> None:
        """From now on a writer that finds the ring full counts a loss (nothing will drain it)."""
        self._header["flags"] = 0

    def counters(self) -> tuple[int, int]:
        """(records the writers could not write, times a writer waited for room)."""
        h = self._header
        return int(h["lost"][0]), int(h["waits"][0])

    def lost(self) -> int:
        full, _ = self.counters()
        return full + self.losses.writer_died

    def details(self) -> dict[str, int | bool]:
        full, waits = self.counters()
        return {"ring_slots": self.capacity, "ring_bytes": self.bytes, "blocking": self.block,
                "lost_ring_full": full, "lost_writer_died": self.losses.writer_died, "writer_waits": waits}

    def is_ring_mapping(self, ev: Columns) -> np.ndarray:
        """The target's own mmap of this ring (it is heapline's, not the program's memory)."""
        return (ev["kind"] == Kind.MMAP) & (ev["a1"] == self.bytes) & ((ev["a3"] & MAP_SHARED) != 0)

    def close(self) -> None:
        del self._header, self._seqs, self._slots, self._words
        self._mm.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _create(size: int) -> tuple[int, str]:
    for n in range(100):
        # one length whatever the pid: the program sees the path in its environment, and a
        # program that copies its environment (Python) allocates by its length
        path = f"{SHM_DIR}/heapline-preload-{os.getpid():07d}-{n:02d}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError as e:
            raise PreloadUnavailable(f"cannot create the preload ring in {SHM_DIR}: {e.strerror}") from e
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            raise PreloadUnavailable(f"cannot size the preload ring in {SHM_DIR}: {e.strerror}") from e
        return fd, path
    raise PreloadUnavailable(f"cannot create the preload ring in {SHM_DIR}: every name is taken")


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie writes nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


#: operator new and delete: where the allocator library defines them, the uprobe path records them
#: as NEW and DELETE; the preload library does not define them (libstdc++'s call malloc)
OPERATORS = ("_Znwm", "_Znam", "_ZdlPv", "_ZdaPv")


def check_target(path: str, library: Path, exported: set[str], shown: str) -> None:
    """Raise :class:`PreloadUnavailable` when the launched program at ``path`` (served by the
    allocator ``shown``, which exports ``exported``) cannot be traced by preloading ``library``."""
    if not library.is_file():
        raise PreloadUnavailable(f"the preload library {library} is not built (run make)")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise PreloadUnavailable(f"cannot read {path}: {e.strerror}") from e
    if mode & 0o6000:
        raise PreloadUnavailable(f"{os.path.basename(path)} is setuid or setgid: the loader ignores LD_PRELOAD for it")
    if any(op in exported for op in OPERATORS):
        raise PreloadUnavailable(f"{shown} defines operator new and delete itself, which the preload library does "
                                 "not interpose")
