"""A recording: start or attach, drain the backend into the trace file, stop cleanly."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tracer import __version__
from tracer.errors import BackendUnavailable, Exit, HeaplineError
from tracer.record import procfs, sysinfo
from tracer.record.backends.base import Backend, LaunchSpec, Options
from tracer.record.drain import POLL_S, Drain, Interrupts, StopRule
from tracer.record.launch import resolve
from tracer.record.residency import ResidencySampler
from tracer.record.status import StatusLine
from tracer.tracefile import TraceWriteError, TraceWriter


@dataclass
class Request:
    output: str
    command: list[str] | None = None
    pid: int | None = None
    backend: str = "auto"
    duration: float | None = None
    quiet: bool = False
    no_aslr: bool = False
    follow_children: bool = True
    ring_mb: int = 64
    env: dict[str, str] | None = None
    trace_alloc: bool = True
    stacks: bool = False
    alloc: str = "auto"
    alloc_block: bool = False


@dataclass
class Result:
    exit_code: int
    events: int
    lost: int
    backend: str
    interrupted: bool
    notes: list[str] = field(default_factory=list)


def make_backend(name: str, options: Options, ring_mb: int, say: Callable[[str], None]) -> Backend:
    if name not in ("auto", "bpf", "strace"):
        raise HeaplineError(f"unknown backend {name!r} (choose auto, bpf or strace)", Exit.USAGE)
    if name in ("auto", "bpf"):
        from tracer.record.backends.bpf.backend import BpfBackend

        try:
            backend = BpfBackend(options, ring_mb=ring_mb)
            backend.say = say
            if backend.headers is not None and backend.headers.note:
                say(backend.headers.note)
            return backend
        except BackendUnavailable as e:
            if name == "bpf":
                raise
            say(f"bpf backend unavailable ({e.message}); using strace")
    from tracer.record.backends.strace import StraceBackend

    backend = StraceBackend(options)
    if options.trace_alloc:
        backend.notes.append("the strace backend sees syscalls only; allocator calls are not traced")
    return backend


def record(req: Request, say: Callable[[str], None]) -> Result:
    if (req.command is None) == (req.pid is None):
        raise HeaplineError("give either a command to launch or --pid to attach to", Exit.USAGE)
    spec = None
    if req.command:
        path = resolve(req.command[0])
        spec = LaunchSpec(path=path, argv=list(req.command), env=req.env, no_aslr=req.no_aslr)
    elif req.pid is not None and not procfs.alive(req.pid):
        raise HeaplineError(f"no process with pid {req.pid}", Exit.PID_NOT_FOUND)

    writer = TraceWriter(req.output)
    try:
        options = Options(follow_children=req.follow_children, trace_alloc=req.trace_alloc, stacks=req.stacks,
                          alloc=req.alloc, alloc_block=req.alloc_block)
        backend = make_backend(req.backend, options, req.ring_mb, say)
        return _run(req, spec, backend, writer, say)
    except BaseException:
        if not writer.started:
            writer.abort()
        raise


def _run(
    req: Request, spec: LaunchSpec | None, backend: Backend, writer: TraceWriter, say: Callable[[str], None]
) -> Result:
    interrupt = Interrupts()
    old_int = signal.signal(signal.SIGINT, interrupt)
    old_term = signal.signal(signal.SIGTERM, interrupt)
    snapshot = None
    t_start = procfs.time_ns()
    wall_start = time.time_ns()
    try:
        if spec is not None:
            pid = backend.launch(spec)
            command = spec.argv
        else:
            assert req.pid is not None
            pid = req.pid
            try:
                command = procfs.read_cmdline(pid)
                backend.attach(pid)
                snapshot = procfs.snapshot(pid)
            except procfs.ProcessGone as e:
                backend.stop()
                raise HeaplineError(f"process {pid} exited while heapline was attaching", Exit.PID_NOT_FOUND) from e
        header = {
            "tool": f"heapline {__version__}",
            "command": command,
            "pid": pid,
            "attached": spec is None,
            "start_ns": t_start,
            "start_realtime_ns": wall_start,
            "clock": "CLOCK_MONOTONIC",
            "machine": sysinfo.machine(),
            "backend": {"name": backend.name, **backend.info().details},
            "options": {
                "follow_children": req.follow_children,
                "no_aslr": req.no_aslr,
                "duration_s": req.duration,
                "trace_alloc": req.trace_alloc,
                "alloc": req.alloc,
            },
            "snapshot": snapshot.to_json() if snapshot else None,
            "malloc_env": _malloc_env(req, spec, pid),
            "notes": list(backend.notes),  # what the recorder said before the target ran (one sentence each)
        }
        try:
            writer.start(header)
            for note in backend.notes:
                say(note)
            if not req.quiet:
                what = "attached to" if spec is None else "launched"
                say(f"recording: {what} pid {pid} with the {backend.name} backend")
            return _loop(req, pid, spec is None, backend, writer, interrupt, t_start, say)
        except TraceWriteError as e:
            raise _write_failed(e, backend, writer, pid, spec is None, interrupt, t_start) from None
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _loop(
    req: Request,
    pid: int,
    attached: bool,
    backend: Backend,
    writer: TraceWriter,
    interrupt: Interrupts,
    t_start: int,
    say: Callable[[str], None],
) -> Result:
    status = StatusLine(pid, enabled=not req.quiet and sys.stderr.isatty())
    drain = Drain(backend, writer, pid, status, ResidencySampler(pid))
    stop = StopRule(attached, req.duration)
    cpu_start = time.process_time()
    try:
        while True:
            time.sleep(POLL_S)
            drain.poll()
            if stop.done(drain, interrupt):
                break
        end_ns = procfs.time_ns()
        drain.take_last()
    finally:
        status.clear()
        cpu_stop = time.process_time()
        backend.stop()
        cpu_start += time.process_time() - cpu_stop  # detaching probes is not collecting
    drain.take_last()  # what was still in flight when tracing stopped
    lost = backend.lost()
    info = backend.info()
    drain.flush()
    cpu_end = time.process_time()
    exit_code = stop.exit_code
    if not attached and exit_code is None:
        exit_code = backend.exit_status()
    libc = drain.libc
    libc_info = sysinfo.describe_libc(libc, "target") if libc else sysinfo.describe_libc(sysinfo.host_libc(), "host")
    end = {
        "end_ns": end_ns,
        "duration_ns": end_ns - t_start,
        "exit_code": exit_code,
        "stop_reason": stop.reason,
        "signals_forwarded": stop.forwarded,
        "residency_samples": drain.residency.samples if drain.residency else 0,
        "lost": {str(cpu): n for cpu, n in lost.items()},
        "lost_total": int(sum(lost.values())),
        "events_written": writer.events_written,
        # CPU heapline itself spent draining, converting and writing (not loading probes)
        "collector_cpu_s": round(cpu_end - cpu_start, 6),
        "writer_cpu_s": round(writer.cpu_s, 6),  # of which converting to Arrow, compressing and writing
        "libc": libc_info,
        "backend_end": info.details,
    }
    writer.close(end)
    interrupted = stop.reason == "interrupted"
    if attached:
        code = int(Exit.INTERRUPTED) if interrupted else 0
    else:
        code = exit_code if exit_code is not None else int(Exit.INTERRUPTED)
    return Result(code, writer.events_written, end["lost_total"], backend.name, interrupted)


def _write_failed(e: TraceWriteError, backend: Backend, writer: TraceWriter, pid: int, attached: bool,
                  interrupt: Interrupts, t_start: int) -> TraceWriteError:
    """The trace could not be written on: tracing stops, what was written stays readable, and the
    target is left alone (a launched command runs to its end, as it would have untraced)."""
    stopped_at = (procfs.time_ns() - t_start) / 1e9
    backend.stop()
    writer.close({})
    kept = f"{writer.events_written:,} events before {stopped_at:.1f} s are readable" if writer.events_written else \
        "nothing was written"
    if attached:
        return TraceWriteError(f"{e.message}; tracing stopped ({kept}); pid {pid} runs on", e.code)
    stop = StopRule(False, None)
    drain = Drain(backend, writer, pid, StatusLine(pid, enabled=False))
    while not stop.done(drain, interrupt):  # signals still go to the command
        time.sleep(POLL_S)
    status = f"exited with {stop.exit_code}" if stop.exit_code is not None else "runs on"
    return TraceWriteError(f"{e.message}; tracing stopped ({kept}); the command {status}", e.code)


def _malloc_env(req: Request, spec: LaunchSpec | None, pid: int) -> dict[str, str]:
    """The target's environment variables that tune malloc (they decide what free() returns)."""
    if spec is not None:
        env = spec.env if spec.env is not None else dict(os.environ)
    else:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p]
            env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
        except OSError:
            env = {}
    keep = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF", "TCMALLOC_", "MIMALLOC_", "JE_MALLOC_CONF")
    return {k: v for k, v in env.items() if k.startswith(keep)}

