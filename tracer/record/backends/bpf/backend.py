"""The eBPF backend: tracepoint and uprobe probes (a CO-RE object through libbpf, or bcc), drained from
ring buffers into numpy."""

from __future__ import annotations

import ctypes as ct
import mmap
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tracer.columns import Columns
from tracer.errors import BackendUnavailable, Exit, HeaplineError
from tracer.events import Kind
from tracer.record import procfs
from tracer.record.backends.base import Backend, BackendInfo, LaunchSpec, Options
from tracer.record.backends.bpf import (
    abi,
    alloc,
    allocators,
    bccload,
    calibrate,
    coreload,
    kheaders,
    preload,
    stacks,
    stale,
)
from tracer.record.backends.bpf.otheralloc import OtherAllocators
from tracer.record.backends.bpf.rings import UNKNOWN_CPU, Rings
from tracer.record.backends.bpf.uprobes import TRACEFS, Uprobes
from tracer.record.launch import HeldChild

BATCH_AGE_NS = 50_000_000  # an allocator batch older than this goes to user space at its CPU's next record
MIN_SPARE_PAGES = 16
STACK_ENTRIES = 16384  # distinct allocation stacks kept (each up to 127 frames)
PRELOAD_PASSES = 4  # drains of the preload ring in one poll at most
LOADER_ENV = "HEAPLINE_LOADER"  # auto (the CO-RE object, else bcc), core or bcc


def probes_dir() -> Path:
    """BPF sources: shipped as package data (installed) or the repository's probes/ folder."""
    try:
        pkg = resources.files("probes")
        path = Path(str(pkg))
        if (path / "syscalls.bpf.c").is_file():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[4] / "probes"


def core_object() -> Path:
    """The CO-RE object make builds from probes/core.bpf.c."""
    return probes_dir() / "build" / "heapline.bpf.o"


def ensure_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    rc = os.system(f"mount -t tracefs nodev {TRACEFS} >/dev/null 2>&1")
    if rc != 0 or not (TRACEFS / "events").is_dir():
        raise BackendUnavailable(f"tracefs is not mounted at {TRACEFS} and could not be mounted", Exit.NO_TRACEFS)


def _home_relative(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if home != "/" and path.startswith(home + "/") else path


def _check_root() -> None:
    if os.geteuid() != 0:
        raise BackendUnavailable("the bpf backend needs root (run heapline with sudo)", Exit.NOT_ROOT)


class BpfBackend(Backend):
    name = "bpf"

    def __init__(self, options: Options, ring_mb: int = 64) -> None:
        super().__init__(options)
        _check_root()
        ensure_tracefs()
        pages = max(1, ring_mb * 1024 * 1024 // mmap.PAGESIZE)
        self.ring_pages = 1 << (pages.bit_length() - 1)
        # the spare ring takes what the main one refuses while it has room (its lock was not taken
        # in time); when both are full, records are lost and counted
        self.spare_pages = max(MIN_SPARE_PAGES, self.ring_pages // 16)
        self.headers: kheaders.Headers | None = None  # the kernel headers bcc compiled against
        self.loader = ""
        removed = stale.clean()
        if removed:
            self.notes.append(f"removed {len(removed)} uprobe definitions left in tracefs by killed heapline recorders")
        self._bpf = None
        self._uprobes = Uprobes(TRACEFS)
        self._rings: Rings | None = None
        self._child: HeldChild | None = None
        self._leftover = Columns.empty()
        self._final_lost: dict[int, int] = {}
        self._root = 0
        self._exec_seen = False
        self._alloc: alloc.Attached | None = None
        self._others: OtherAllocators | None = None
        self._overhead: dict | None = None
        self._maps: stacks.MapsWatcher | None = None
        self._stacks: dict | None = None
        self._alloc_info: dict = {"traced": False, "reason": "not requested (--no-alloc)"}
        self._preload: preload.PreloadRing | None = None
        self._ring_bytes = ring_mb * 1024 * 1024
        self._final_details: dict = {}
        self._load()
        stale.register()

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        """The CO-RE object through libbpf where it loads (no compiler, no bcc), else bcc compiling
        the same sources; HEAPLINE_LOADER=core or bcc forces one."""
        wanted = os.environ.get(LOADER_ENV, "auto")
        if wanted not in ("auto", "core", "bcc"):
            raise HeaplineError(f"{LOADER_ENV}={wanted!r}: choose auto, core or bcc", Exit.USAGE)
        if wanted != "bcc":
            try:
                self._bpf = self._load_core()
                self.loader = "core"
            except coreload.CoreUnavailable as e:
                if wanted == "core":
                    raise BackendUnavailable(f"the CO-RE probes could not be loaded: {e}", Exit.NO_EBPF) from e
                self.notes.append(f"compiled the probes with bcc: {str(e).rstrip('.')}")
        if self._bpf is None:
            self._bpf = self._load_bcc()
            self.loader = "bcc"
        self._rings = Rings(self._bpf, self.ring_pages, self.spare_pages, self.options.trace_alloc)

    def _load_core(self) -> coreload.CoreObject:
        page = mmap.PAGESIZE
        config = coreload.Config(rss_interval_ns=int(self.options.rss_interval_ns),
                                 follow_children=1 if self.options.follow_children else 0,
                                 batch_age_ns=BATCH_AGE_NS, stacks=1 if self.options.stacks else 0)
        alloc_ring = self.ring_pages if self.options.trace_alloc else 1
        return coreload.CoreObject(str(core_object()), ring_bytes=self.ring_pages * page,
                                   spare_bytes=self.spare_pages * page, alloc_ring_bytes=alloc_ring * page,
                                   config=config, alloc=self.options.trace_alloc,
                                   stack_entries=STACK_ENTRIES if self.options.stacks else 1)

    def _load_bcc(self) -> Any:
        self.headers = kheaders.find()
        parts = ["common.bpf.c", "syscalls.bpf.c"] + (["alloc.bpf.c"] if self.options.trace_alloc else [])
        cflags = [
            *abi.cflags(),  # every value the probes share with the Python (heapline.h checks them)
            f"-DRINGBUF_PAGES={self.ring_pages}",
            f"-DSPARE_PAGES={self.spare_pages}",
            f"-DRSS_INTERVAL_NS={int(self.options.rss_interval_ns)}ULL",
            f"-DFOLLOW_CHILDREN={1 if self.options.follow_children else 0}",
            f"-DALLOC_RING_PAGES={self.ring_pages}",
            f"-DBATCH_AGE_NS={BATCH_AGE_NS}ULL",
            *([f"-DSTACKS={STACK_ENTRIES}"] if self.options.stacks else []),
        ]
        try:
            return bccload.load(probes_dir(), parts, cflags, self.headers.path)
        except bccload.BccUnavailable as e:
            raise BackendUnavailable(str(e), Exit.NO_EBPF) from e

    def _arm(self, pid: int, state: int) -> None:
        assert self._bpf is not None
        self._bpf["traced"][ct.c_uint(pid)] = ct.c_ubyte(state)

    # -- Backend ---------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> int:
        env = spec.env if spec.env is not None else dict(os.environ)
        method = self.options.alloc
        lib = self._find_allocator(lambda: allocators.find_for_launch(spec.path, env), method != "preload")
        child_env = spec.env
        if lib is not None and method == "preload":
            child_env = self._start_preload(spec.path, lib, env)
            lib = None  # no uprobes
        child = HeldChild(spec.path, spec.argv, child_env, spec.no_aslr)
        self._child = child
        self._root = child.pid
        if self.options.stacks:
            self._maps = stacks.MapsWatcher(child.pid)
        try:
            self._arm(child.pid, abi.TRACE_PENDING_EXEC)
            if lib is not None:
                self._probe_allocator(lib, child.pid)
        except BaseException:
            child.abandon()
            raise
        child.release()
        return child.pid

    def attach(self, pid: int) -> None:
        try:
            task = procfs.live_task(pid)  # its main thread may have exited: read and probe through a live one
        except procfs.ProcessGone:
            raise HeaplineError(f"no process with pid {pid}", Exit.PID_NOT_FOUND) from None
        lib = self._find_allocator(lambda: allocators.find_for_pid(task))
        self._arm(pid, abi.TRACE_ACTIVE)
        self._root = pid
        self._exec_seen = True  # nothing of the target runs before an exec we wait for
        if self.options.stacks:
            self._maps = stacks.MapsWatcher(task)
            self._watch_maps()
        children = procfs.descendants(pid) if self.options.follow_children else []
        for child in children:
            self._arm(child, abi.TRACE_ACTIVE)
        if lib is not None:
            self._probe_allocator(lib, task)  # per-task perf events: they fire for every thread of its mm
            if self._alloc is not None and isinstance(self._alloc.attacher, alloc.TracefsProbes):
                for child in children:  # processes forked before the attach: their calls too
                    if self._alloc.attacher.follow(child) and self._others is not None:
                        self._others.look_at(child)  # and whether they use the same allocator

    def _start_preload(self, path: str, lib: allocators.AllocatorLib, env: dict[str, str]) -> dict[str, str]:
        """Create the preload ring; the launched command's environment that loads the library."""
        library = preload.library_path(probes_dir())
        try:
            preload.check_target(path, library, lib.exported, lib.shown_path)
            self._preload = preload.PreloadRing(preload.ring_capacity(self._ring_bytes), self.options.alloc_block)
        except preload.PreloadUnavailable as e:
            raise HeaplineError(f"--alloc preload cannot trace this command: {e}", Exit.NO_PRELOAD) from None
        self._alloc_info = {"traced": True, "method": "preload", "library": lib.shown_path, "family": lib.family,
                            "build_id": lib.build_id, "elsewhere": {}, "children": self.options.follow_children,
                            "preload": {"library": str(library), **self._preload.details()}, "overhead": None}
        return self._preload.env(library, env)

    def _find_allocator(self, find: Callable[[], allocators.AllocatorLib],
                        calibrate: bool = True) -> allocators.AllocatorLib | None:
        """The allocator library to probe, measured once (calibrate.py) before anything is traced."""
        if not self.options.trace_alloc:
            return None
        try:
            lib = find()
        except allocators.NoAllocator as e:
            self.notes.append(f"allocator calls are not traced: {str(e).rstrip('.')}; recording the syscall view")
            self._alloc_info = {"traced": False, "reason": str(e)}
            return None
        if calibrate:
            self._overhead = self._calibrate(lib)
        return lib

    def _calibrate(self, lib: allocators.AllocatorLib) -> dict | None:
        held: list[alloc.Attached] = []

        def arm(pid: int) -> None:
            held.append(alloc.attach_or_share(self._bpf, lib, pid, self._uprobes, inherit=False)[0])

        def disarm() -> None:
            for a in held:
                alloc.detach(a)

        try:
            return calibrate.per_call_ns(lib, arm, disarm, self.say)
        except (alloc.ProbeRefused, OSError, ValueError, subprocess.SubprocessError):
            disarm()
            return None
        finally:
            assert self._rings is not None
            self._rings.discard()  # the calibration's own records: nothing else is traced yet

    def _probe_allocator(self, lib: allocators.AllocatorLib, pid: int) -> None:
        """Probe the allocator of ``pid``; when that cannot be done, say why and keep the syscall view."""
        inherit = self.options.follow_children
        try:
            self._alloc, note = alloc.attach_or_share(self._bpf, lib, pid, self._uprobes, inherit)
            if note:
                self.notes.append(note)
        except alloc.ProbeRefused as e:
            self._alloc = None
            self.notes.append(f"{str(e).rstrip('.')}; recording the syscall view")
            self._alloc_info = {"traced": False, "reason": str(e), "library": lib.shown_path}
            return
        self._alloc_info = {"traced": True, "method": "uprobes", **self._alloc.describe(), "overhead": self._overhead}
        if self._alloc.children:
            self._others = OtherAllocators(lib, pid, self.say)
            self._alloc_info["other_allocators"] = self._others.found  # filled while recording

    def poll(self) -> Columns:
        if self._rings is None:  # stopped: what was drained while stopping
            ev, self._leftover = self._leftover, Columns.empty()
            return ev
        ev, spare, batches = self._rings.drain()
        if self._preload is not None:  # the library's mapping of the ring is heapline's, not the program's
            ev, spare = (e.where(~self._preload.is_ring_mapping(e)) if len(e) else e for e in (ev, spare))
        if self._others is not None:  # execs come through the events rings, never in allocator batches
            self._others.feed(ev)
            self._others.feed(spare)
        extra = [a for a in (spare, batches, Columns.from_records(self._rings.trailing_rss()), self._preloaded())
                 if len(a)]
        if extra:
            ev = Columns.merged([ev, *extra])
        if not self._exec_seen and len(ev):
            ev = self._drop_launcher_calls(ev)
        if self._maps is not None and self._exec_seen:
            self._watch_maps()
        if self._others is not None:
            self._others.check()
        return ev

    def _preloaded(self, final: bool = False) -> Columns:
        """The preload ring's records (those of the launched process alone without --follow)."""
        if self._preload is None:
            return Columns.empty()
        got = self._preload.drain(final)
        parts = [got]
        # a busy writer fills the ring faster than a poll comes round: drain again while there was
        # much to take (a few times, so that the syscall rings are not kept waiting)
        while not final and len(parts) < PRELOAD_PASSES and len(parts[-1]) > self._preload.capacity // 4:
            parts.append(self._preload.drain())
        if len(parts) > 1:
            got = Columns.concat(parts)
        if not self.options.follow_children and len(got):
            got = got.take(np.flatnonzero(got["pid"] == self._root))
        return got

    def _watch_maps(self) -> None:
        """Keep the target's code mappings while it lives: stacks are symbolized against them."""
        assert self._maps is not None
        first = not self._maps.seen
        self._maps.poll()
        if first and self._maps.seen:
            try:
                exe = os.readlink(f"/proc/{self._root}/exe")
            except OSError:
                return
            note = stacks.frame_pointer_note(exe)
            if note:
                self.say(note)
                self.notes.append(note)

    def _drop_launcher_calls(self, ev: Columns) -> Columns:
        """Before its exec, the launched pid still runs heapline's own code (the allocator probes are
        armed on that pid already): its allocator calls from then are not the target's."""
        mine = ev["pid"] == self._root
        execs = np.flatnonzero(mine & (ev["kind"] == Kind.EXEC))
        before = mine & (ev["kind"] >= Kind.MALLOC)
        if len(execs):
            self._exec_seen = True
            before &= ev["ts"] < ev["ts"][execs[0]]
        return ev.take(np.flatnonzero(~before))

    def exit_status(self) -> int | None:
        return self._child.wait() if self._child is not None else None

    def _symbolized_stacks(self) -> dict:
        """Every stack the kernel kept, as frames with module, build-id, file offset and symbol."""
        assert self._bpf is not None and self._maps is not None
        table = self._bpf["stacks"]
        raw = {}
        for key in list(table.keys()):
            sid = key.value
            raw[sid + 1] = [int(a) for a in table.walk(sid)]  # ids as stored in the events (a4)
        out = stacks.symbolize(raw, self._maps.seen)
        out["note"] = "event a4 is the stack id (0: none); frames are [address, module, file offset, symbol]"
        return out

    def lost(self) -> dict[int, int]:
        if self._bpf is None or self._rings is None:
            return dict(self._final_lost)
        out = self._rings.lost()
        if self._preload is not None and self._preload.lost():  # the writers do not say on which CPU
            out[UNKNOWN_CPU] = out.get(UNKNOWN_CPU, 0) + self._preload.lost()
        return out

    def stop(self) -> None:
        if self._bpf is None:
            return
        # each detach waits for an RCU grace period (~75 ms here): overlap them
        bpf = self._bpf
        if self._alloc is not None:
            alloc.detach(self._alloc)
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(bpf.detach_tracepoint, list(bpf.tracepoint_fds)))
        # no probe runs any more: what is in the ring now is everything
        if self._rings is not None:
            if self._preload is not None:
                self._preload.stop_blocking()  # nothing drains the ring after this
            self._leftover = self.poll()
            if self._rings.batches is not None:
                rest = self._rings.batch_leftovers()
                if len(rest):
                    self._leftover = Columns.merged([self._leftover, rest])
            rest = self._preloaded(final=True)
            if len(rest):
                self._leftover = Columns.merged([self._leftover, rest])
            self._final_lost = self.lost()
            self._final_details = self.info().details
            self._rings.close()
            self._rings = None
            if self._preload is not None:
                self._preload.close()
        if self._maps is not None:
            self._stacks = self._symbolized_stacks()
            self._final_details["stacks"] = self._stacks
        bpf.cleanup()
        self._bpf = None
        stale.unregister()

    def info(self) -> BackendInfo:
        if self._bpf is None:
            return BackendInfo(self.name, dict(self._final_details))
        if self._preload is not None:
            self._alloc_info["preload"].update(self._preload.details())
        details = {
            "loader": self.loader,
            **({"kernel_headers": _home_relative(self.headers.path), "kernel_headers_exact": self.headers.exact}
               if self.headers is not None else {}),
            "ring_buffer_bytes": self.ring_pages * mmap.PAGESIZE,
            "rss_interval_ns": self.options.rss_interval_ns,
            **(self._rings.details() if self._rings is not None else {}),
            "allocator": self._alloc_info,
            **({"stacks": self._stacks} if self._stacks is not None else {}),
        }
        if self._preload is not None and "lost_by_reason" in details:
            d = self._preload.details()
            details["lost_by_reason"].update(preload_ring_full=d["lost_ring_full"],
                                             preload_writer_died=d["lost_writer_died"])
        return BackendInfo(self.name, details)
