"""Uprobes that follow a process into the children it forks.

bcc attaches a uprobe through the perf ``uprobe`` PMU: one perf event per probe, filtered to one
pid. Such an event cannot be inherited (the kernel would need the tracer's path string again in the
forking process, and the fork itself fails). A uprobe *defined* in tracefs (``uprobe_events``) and
opened as a tracepoint event can be: with ``inherit`` set, every task forked after the open (threads
too) gets its own copy of the event, the probe fires in the child, and keeps firing after the
child's exec as long as it maps the same library.

The BPF program is attached to a second event on the same probe, one that is not inherited. The
program belongs to the probe (its program array is shared by every event on it) and runs for each
hit the probe's filter lets through, i.e. in any process one of its events targets. Carrying the
program on the inherited event itself does not work: when an inherited copy is freed (at each
child's exit) the kernel detaches the program from the probe, and the parent's calls stop being
traced. The programs return 0, so the kernel writes nothing to the events' own buffers.

One event can probe many instructions (each definition after the first adds a probe to it), and
one program can serve them all when it can tell them apart (probes/alloc.bpf.c finds the function
by the probed address): the fewer events, the cheaper each new task, which perf gives a copy of
every inherited event (~10 us each here, threads included).

Definitions are named ``heapline/<program>_<recorder pid>_<n>`` so that the ones left behind by a
recorder killed with SIGKILL can be found and removed (tracer/stale.py).
"""

from __future__ import annotations

import ctypes as ct
import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from tracer.record.backends.bpf.stale import write_event

TRACEFS = Path("/sys/kernel/tracing")
GROUP = "heapline"
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
ATTR_INHERIT = 1 << 1
NR_PERF_EVENT_OPEN = 298  # x86-64 (the only architecture the probe sites are chosen for)


class _Attr(ct.Structure):
    """The start of ``struct perf_event_attr`` (PERF_ATTR_SIZE_VER7 bytes, the rest zero)."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("size", ct.c_uint32),
        ("config", ct.c_uint64),
        ("sample_period", ct.c_uint64),
        ("sample_type", ct.c_uint64),
        ("read_format", ct.c_uint64),
        ("flags", ct.c_uint64),
        ("wakeup_events", ct.c_uint32),
        ("bp_type", ct.c_uint32),
        ("config1", ct.c_uint64),
        ("config2", ct.c_uint64),
        ("rest", ct.c_uint8 * 64),
    ]


_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


class UprobeError(OSError):
    """The kernel refused a definition or an event; ``str()`` says which step and why."""


def perf_open(tracepoint_id: int, pid: int, inherit: bool) -> int:
    attr = _Attr(type=PERF_TYPE_TRACEPOINT, size=128, config=tracepoint_id, sample_period=1, wakeup_events=1)
    attr.flags = ATTR_INHERIT if inherit else 0
    # every argument as a long: syscall() is variadic and the kernel reads whole registers
    fd = _libc.syscall(ct.c_long(NR_PERF_EVENT_OPEN), ct.byref(attr), ct.c_long(pid), ct.c_long(-1),
                       ct.c_long(-1), ct.c_ulong(PERF_FLAG_FD_CLOEXEC))  # fmt: skip
    if fd < 0:
        err = ct.get_errno()
        raise UprobeError(err, os.strerror(err))
    return int(fd)


@dataclass
class Probe:
    name: str
    fds: list[int] = field(default_factory=list)
    defined: bool = False


class Uprobes:
    """The uprobes one recorder defines; each one's BPF program runs for ``pid`` and, when
    ``inherit`` is set, for every task ``pid`` creates from then on."""

    def __init__(self, tracefs: Path = TRACEFS) -> None:
        self.tracefs = tracefs
        self._n = 0

    def attach(self, prog_fd: int, where: list[tuple[str, int]], is_return: bool, pid: int, inherit: bool,
               label: str) -> Probe:  # fmt: skip
        """Define one event probing every (path, file offset) of ``where`` and run ``prog_fd`` on
        its hits (the program tells the instructions apart by their address)."""
        bad = next((path for path, _ in where if any(c.isspace() for c in path)), None)
        if bad is not None:
            raise UprobeError(errno.EINVAL, f"tracefs cannot name a file whose path has a space ({bad!r})")
        self._n += 1
        probe = Probe(f"{label}_{os.getpid()}_{self._n}")
        kind = "r" if is_return else "p"
        events = self.tracefs / "uprobe_events"
        try:
            for path, offset in where:  # the second and later definitions add probes to the event
                write_event(events, f"{kind}:{GROUP}/{probe.name} {path}:{offset:#x}")
                probe.defined = True
            tp_id = int((self.tracefs / "events" / GROUP / probe.name / "id").read_text())
        except OSError as e:
            self.detach(probe)
            raise UprobeError(e.errno or errno.EIO, f"defining the uprobe failed: {e.strerror or e}") from e
        try:
            anchor = perf_open(tp_id, pid, inherit=False)
            probe.fds.append(anchor)
            fcntl.ioctl(anchor, PERF_EVENT_IOC_SET_BPF, prog_fd)
            fcntl.ioctl(anchor, PERF_EVENT_IOC_ENABLE, 0)
            if inherit:
                follower = perf_open(tp_id, pid, inherit=True)
                probe.fds.append(follower)
                fcntl.ioctl(follower, PERF_EVENT_IOC_ENABLE, 0)
        except OSError as e:
            self.detach(probe)
            raise UprobeError(e.errno or errno.EIO, e.strerror or str(e)) from e
        return probe

    def follow(self, probe: Probe, pid: int) -> None:
        """Make ``probe`` fire in ``pid`` too, and in the tasks it creates from now on (an
        inherited event without a program: the probe's program already runs for every hit)."""
        tp_id = int((self.tracefs / "events" / GROUP / probe.name / "id").read_text())
        fd = perf_open(tp_id, pid, inherit=True)
        probe.fds.append(fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)

    def detach(self, probe: Probe) -> None:
        """Close its events (inherited copies go with them), then remove the definition."""
        for fd in probe.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        probe.fds.clear()
        if not probe.defined:
            return
        probe.defined = False
        try:
            write_event(self.tracefs / "uprobe_events", f"-:{GROUP}/{probe.name}")
        except OSError:
            pass  # still busy: tracer/stale.py removes it once this recorder is gone
