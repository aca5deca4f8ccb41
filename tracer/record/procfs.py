"""Reading a live process from /proc: the attach snapshot and RSS sampling.

Only the recorder calls this module; the model never talks to the kernel.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from tracer.errors import Exit, HeaplineError


class ProcessGone(Exception):
    """The process disappeared while we were reading it."""


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str

    @property
    def anonymous(self) -> bool:
        """Private or shared anonymous memory (no backing file)."""
        return self.inode == 0 and (self.path == "" or not self.path.startswith("/"))


@dataclass
class Rss:
    anon: int
    file: int
    shmem: int
    swap: int


@dataclass
class Snapshot:
    """What a running process looks like at the moment tracing starts."""

    pid: int
    ts_begin: int  # CLOCK_MONOTONIC ns before reading
    ts_end: int  # and after
    start_brk: int
    brk: int  # end of the [heap] mapping (page aligned), start_brk when there is no heap yet
    rss: Rss
    mappings: list[Mapping] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> Snapshot:
        return Snapshot(
            pid=d["pid"],
            ts_begin=d["ts_begin"],
            ts_end=d["ts_end"],
            start_brk=d["start_brk"],
            brk=d["brk"],
            rss=Rss(**d["rss"]),
            mappings=[Mapping(**m) for m in d["mappings"]],
        )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(path) from e
    except PermissionError as e:
        pid = path.split("/")[2]
        raise HeaplineError(f"cannot read {path}: permission denied (pid {pid} is in another PID namespace or "
                            "protected from inspection)", Exit.NOT_PERMITTED) from e


def parse_maps(text: str) -> list[Mapping]:
    out: list[Mapping] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = parts[0].split("-")
        out.append(
            Mapping(
                start=int(lo, 16),
                end=int(hi, 16),
                perms=parts[1],
                offset=int(parts[2], 16),
                inode=int(parts[4]),
                path=parts[5].strip() if len(parts) > 5 else "",
            )
        )
    return out


def read_maps(pid: int) -> list[Mapping]:
    return parse_maps(_read(f"/proc/{pid}/maps"))


def parse_status_rss(text: str) -> Rss:
    vals = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0, "VmSwap": 0}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in vals:
            vals[key] = int(rest.split()[0]) * 1024
    return Rss(anon=vals["RssAnon"], file=vals["RssFile"], shmem=vals["RssShmem"], swap=vals["VmSwap"])


def read_rss(pid: int) -> Rss:
    return parse_status_rss(_read(f"/proc/{pid}/status"))


def read_start_brk(pid: int) -> int:
    """start_brk from /proc/PID/stat (field 47), exact as the kernel keeps it."""
    stat = _read(f"/proc/{pid}/stat")
    # comm may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); field 47 is fields[44]
    return int(fields[44])


def read_cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{live_task(pid)}/cmdline")
    return [a for a in raw.split("\0") if a]


def live_task(pid: int) -> int:
    """A task of process ``pid`` that still runs: ``pid`` itself unless its main thread has exited
    while other threads run on (a zombie leader, whose /proc files show no memory at all: read them
    through this task, and attach per-task probes to it)."""
    try:
        tasks = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(f"/proc/{pid}/task") from e
    except PermissionError:
        return pid
    for tid in sorted(tasks, key=lambda t: t != pid):  # the leader first
        try:
            stat = _read(f"/proc/{pid}/task/{tid}/stat")
        except ProcessGone:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            return tid
    raise ProcessGone(f"/proc/{pid}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes; a process whose main thread exited while its other
    # threads run has a zombie leader and lives on in them
    try:
        live_task(pid)
    except ProcessGone:
        return False
    return True


def snapshot(pid: int) -> Snapshot:
    """Heap range, existing mappings and RSS of a running process (read through a task that runs)."""
    t0 = time_ns()
    task = live_task(pid)
    start_brk = read_start_brk(task)
    maps = read_maps(task)
    rss = read_rss(task)
    t1 = time_ns()
    brk = start_brk
    for m in maps:
        if m.path == "[heap]":
            brk = m.end
    keep = [m for m in maps if m.path != "[heap]"]
    return Snapshot(pid=pid, ts_begin=t0, ts_end=t1, start_brk=start_brk, brk=brk, rss=rss, mappings=keep)


def time_ns() -> int:
    """The clock every event uses: CLOCK_MONOTONIC, as bpf_ktime_get_ns()."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def descendants(pid: int) -> list[int]:
    """Processes below ``pid`` in the process tree right now (children, grandchildren...)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = _read(f"/proc/{entry}/stat")
        except (ProcessGone, OSError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent_of[int(entry)] = int(fields[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out
