"""The strace backend: ``strace`` text turned into events, plus RSS samples from /proc.

Launch mode runs ``strace -DD -I2 ... -- PATH ARGS`` as a :class:`HeldChild`. With ``-D`` strace traces
from a grandchild while the held child itself execs the command: the command keeps the pid launch()
returns, stays our child (its exit status, 128+signal included, is ours to collect) and inherits the
``no_aslr`` personality. ``-DD`` gives the tracer its own process group, so a Ctrl-C at the terminal
reaches the command but not strace, which records until the command ends; ``-I2`` lets SIGINT make
strace detach. strace writes to a FIFO in a private temporary directory rather than to an inherited
pipe (which the command would inherit as well); a thread reads it into :class:`StraceParser`.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import numpy as np

from tracer.columns import Columns
from tracer.errors import BackendUnavailable, Exit, HeaplineError
from tracer.events import Kind, from_rows
from tracer.record import procfs
from tracer.record.backends.base import Backend, BackendInfo, LaunchSpec, Options
from tracer.record.backends.strace_parse import StraceParser, strace_args
from tracer.record.launch import HeldChild

MIN_RSS_PERIOD_NS = 10_000_000
#: How long strace holds each exit_group so the reader can take the process's last RSS sample.
EXIT_HOLD_US = 30_000


def clock_offset_ns(samples: int = 7) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of a few bracketed readings."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, real - (m0 + m1) // 2)
    assert best is not None
    return best[1]


def _status_field(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), None)
    except (OSError, ValueError):
        return None


def tracer_of(pid: int) -> int:
    """The pid ptrace-attached to ``pid`` (0 if none or gone)."""
    return _status_field(pid, "TracerPid") or 0


def tgid_of(tid: int) -> int | None:
    return _status_field(tid, "Tgid")


def strace_version(path: str) -> tuple[int, int]:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else (0, 0)


class StraceBackend(Backend):
    name = "strace"
    #: stop(): how long a launched command still running gets to end before strace detaches from it.
    stop_grace_s: float = 2.0

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._lock = threading.Lock()
        self._parser: StraceParser | None = None
        self._held: HeldChild | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._root = 0
        self._tracer = 0
        self._argv: list[str] = []
        self._version = (0, 0)
        self._seccomp = False
        self._offset = 0
        self._fifo_dir: str | None = None
        self._fifo = ""
        self._fd = -1
        self._reader: threading.Thread | None = None
        self._eof = threading.Event()
        self._reader_done = threading.Event()
        self._drain: subprocess.Popen[bytes] | None = None
        self._quit_at: float | None = None
        self._rss: list[tuple[int, ...]] = []
        self._tail: list[np.ndarray] = []
        self._rss_period = max(options.rss_interval_ns, MIN_RSS_PERIOD_NS)
        self._stopped = False
        self._exited_at: float | None = None
        self._sampled: set[int] = set()

    # --- setup ----------------------------------------------------------------------------------------

    def _find_strace(self) -> str:
        path = shutil.which("strace")
        if path is None:
            msg = "strace is not installed (install the 'strace' package or use another backend)"
            raise BackendUnavailable(msg, Exit.NO_STRACE)
        self._version = strace_version(path)
        return path

    def _open_fifo(self) -> str:
        self._fifo_dir = tempfile.mkdtemp(prefix="heapline-strace-")
        path = self._fifo = os.path.join(self._fifo_dir, "trace")
        os.mkfifo(path, 0o600)
        # Opened before strace so its open() for writing does not block; no writer yet means no EOF.
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return path

    def _args(self, fifo: str, follow: bool, seccomp: bool) -> list[str]:
        self._seccomp = seccomp and follow and self._version >= (5, 3)
        hold = EXIT_HOLD_US if self._version >= (4, 22) else 0  # delay_enter came in strace 4.22
        return strace_args(
            fifo, follow=follow, seccomp=self._seccomp, ns_precision=self._version >= (6, 0), exit_hold_us=hold
        )

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_loop, name="strace-reader", daemon=True)
        self._reader.start()

    def launch(self, spec: LaunchSpec) -> int:
        strace = self._find_strace()
        self._offset = clock_offset_ns()
        fifo = self._open_fifo()
        follow = self.options.follow_children
        target = [spec.path, *spec.argv[1:]]  # strace execs PATH with argv[0] = PATH
        self._argv = [strace, "-DD", "-I2", *self._args(fifo, follow, seccomp=True), "--", *target]
        try:
            held = HeldChild(strace, self._argv, env=spec.env, no_aslr=spec.no_aslr)
        except BaseException:
            self._cleanup()
            raise
        self._held, self._root = held, held.pid
        # The held child runs strace until its execve: its first EXEC event makes it a live process.
        self._parser = StraceParser(self._offset, default_tid=held.pid, track_children=follow)
        self._start_reader()
        try:
            held.release()
        except BaseException:
            self._finish_reader(0.0)
            self._cleanup()
            raise
        # strace's first line is the command's execve; without it strace failed before tracing.
        deadline = time.monotonic() + 10.0
        while self._parser.lines == 0 and time.monotonic() < deadline:
            if held.wait() is not None or self._reader_done.is_set():
                deadline = min(deadline, time.monotonic() + 0.5)
            time.sleep(0.002)
        status = held.wait()
        if self._parser.lines == 0 and status is not None:
            self._finish_reader(0.0)
            self._cleanup()
            msg = f"strace could not start {spec.path} (exit status {status})"
            raise HeaplineError(msg, Exit.NOT_EXECUTABLE)
        self._tracer = tracer_of(held.pid)
        return held.pid

    def attach(self, pid: int) -> None:
        strace = self._find_strace()
        if not procfs.alive(pid):
            raise HeaplineError(f"no process with pid {pid}", Exit.PID_NOT_FOUND)
        other = tracer_of(pid)
        if other:
            raise BackendUnavailable(f"process {pid} is already traced by pid {other}", Exit.NO_STRACE)
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            raise HeaplineError(f"no process with pid {pid}", Exit.PID_NOT_FOUND) from None
        self._offset = clock_offset_ns()
        fifo = self._open_fifo()
        follow = self.options.follow_children
        # With -f strace attaches every thread of the process itself; without it, name each thread.
        targets = ["-p", str(pid)] if follow else [a for t in tids for a in ("-p", str(t))]
        self._argv = [strace, *targets, *self._args(fifo, follow, seccomp=False)]
        self._root = pid
        self._parser = StraceParser(self._offset, default_tid=pid, tgid_of=tgid_of, track_children=follow)
        for tid in tids:
            self._parser.add_task(tid, pid)
        self._start_reader()
        with tempfile.TemporaryFile() as said:  # what strace says if it cannot attach
            self._proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stderr=said, process_group=0)
            self._tracer = self._proc.pid
            deadline = time.monotonic() + 10.0
            while tracer_of(pid) != self._proc.pid:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    code = self._proc.poll()
                    self.stop()
                    said.seek(0)
                    raise _attach_refused(pid, code, said.read().decode(errors="replace"))
                time.sleep(0.005)

    # --- reading --------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self._parser is not None
        buf = b""
        next_sample = 0
        try:
            while self._quit_at is None or time.monotonic() < self._quit_at:
                now = procfs.time_ns()
                if now >= next_sample:
                    self._sample_rss(new_only=False)
                    next_sample = now + self._rss_period
                wait = max(0.0, (next_sample - procfs.time_ns()) / 1e9)
                ready, _, _ = select.select([self._fd], [], [], min(wait, 0.05))
                if not ready:
                    continue
                try:
                    chunk = os.read(self._fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._eof.set()  # the writer has come and gone: strace ended
                    break
                buf += chunk
                lines = buf.split(b"\n")
                buf = lines.pop()
                with self._lock:
                    for line in lines:
                        self._parser.feed(line.decode("utf-8", errors="replace"))
                    self._parser.advance()
                if b"exit_group(" in chunk:  # strace holds the call: the last sample before the memory goes
                    self._sample_rss(new_only=False)
                else:
                    self._sample_rss(new_only=True)  # a process that just started gets its first sample now
            if buf:
                with self._lock:
                    self._parser.feed(buf.decode("utf-8", errors="replace"))
        finally:
            with self._lock:  # nothing will complete the calls still open
                self._tail.append(self._parser.flush())
            self._reader_done.set()

    def _sample_rss(self, new_only: bool) -> None:
        """RSS events for the live traced processes (only those never sampled yet, if ``new_only``)."""
        with self._lock:
            pids = self._parser.live_processes() if self._parser is not None else []
        if new_only:
            pids = [p for p in pids if p not in self._sampled]
        rows = []
        for pid in pids:
            self._sampled.add(pid)
            try:
                with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if "RssAnon:" not in text:
                continue  # a zombie: its memory is gone already
            rss = procfs.parse_status_rss(text)
            sizes = (rss.anon, rss.file, rss.shmem, rss.swap, 0, 0)
            rows.append((procfs.time_ns(), 0, pid, pid, int(Kind.RSS), 0, 0, *sizes, 0))
        if rows:
            with self._lock:
                self._rss.extend(rows)

    # --- Backend --------------------------------------------------------------------------------------

    def poll(self) -> Columns:
        with self._lock:
            parts = self._tail
            self._tail = []
            if self._parser is not None:
                parts.append(self._parser.take())
            if self._rss:
                parts.append(from_rows(self._rss))
                self._rss = []
        parts = [p for p in parts if len(p)]
        if not parts:
            return Columns.empty()
        events = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return Columns.from_records(events[np.argsort(events["ts"], kind="stable")])

    def exit_status(self) -> int | None:
        """The command's status once it has ended *and* its trace is in: the next poll() has it all.

        That is when strace has finished (it ends with its last tracee) or, if children of the
        command keep it running, when the command's own exit has been parsed and released.
        """
        if self._held is None:
            return None
        status = self._held.wait()
        if status is None:
            return None
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        with self._lock:
            ended = self._parser is not None and self._root in self._parser.ended
        if ended or self._eof.is_set() or time.monotonic() - self._exited_at > 5.0:
            return status
        return None

    def lost(self) -> dict[int, int]:
        """strace never drops events (a slow reader slows the target down instead)."""
        return {-1: 0}

    def stop(self) -> None:
        """Stop recording, read what strace wrote, release everything; the traced processes run on.

        Attach mode: SIGINT makes strace detach. Launch mode: the command (and its children) get
        ``stop_grace_s`` to end by themselves. If some still run, strace cannot simply detach when it
        uses ``--seccomp-bpf``: a process whose seccomp filter asks for a tracer that is gone gets
        ENOSYS from those syscalls (mmap included). strace then stays attached and its output is
        handed to a ``cat`` in its own session that discards it until they end; without seccomp it
        detaches. Events still held by the parser are flushed; a later poll() returns them.
        """
        if self._stopped:
            return
        self._stopped = True
        hand_over = False
        if self._held is not None:
            if not self._wait_eof(self.stop_grace_s):
                hand_over = self._seccomp and shutil.which("cat") is not None
                if not hand_over:
                    self._signal_tracer(signal.SIGINT)
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        if self._reader is not None and not hand_over and not self._wait_eof(10.0):
            self._signal_tracer(signal.SIGKILL)
        self._finish_reader(0.0 if hand_over else 1.0)
        if hand_over:
            self._hand_over()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._cleanup()

    def _wait_eof(self, timeout_s: float) -> bool:
        """Wait until strace has closed its output (or has gone without ever opening it)."""
        deadline = time.monotonic() + timeout_s
        while not self._eof.is_set() and time.monotonic() < deadline:
            if not self._strace_running():
                return self._eof.wait(0.2)
            time.sleep(0.01)
        return self._eof.is_set()

    def _strace_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._tracer_pid() != 0

    def _tracer_pid(self) -> int:
        """The launch-mode strace (a grandchild: not ours to wait for) while it runs, else 0.

        Known from TracerPid while the command lives; found by its ``-o FIFO`` argument otherwise.
        """
        candidates = [tracer_of(self._root), self._tracer]
        if not any(candidates):
            candidates = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for pid in candidates:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if pid and self._fifo.encode() in argv and argv[0].endswith(b"strace"):
                self._tracer = pid
                return pid
        self._tracer = 0
        return 0

    def _hand_over(self) -> None:
        """Leave strace attached, its output read and discarded by a cat of its own session."""
        os.set_blocking(self._fd, True)
        null = subprocess.DEVNULL
        cat = ["cat"]
        self._drain = subprocess.Popen(cat, stdin=self._fd, stdout=null, stderr=null, start_new_session=True)

    def _signal_tracer(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(sig)
        elif tracer := self._tracer_pid():
            os.kill(tracer, sig)

    def _finish_reader(self, grace_s: float) -> None:
        if self._reader is None:
            return
        self._quit_at = time.monotonic() + grace_s
        self._reader.join()
        self._reader = None

    def _cleanup(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._fifo_dir is not None:
            shutil.rmtree(self._fifo_dir, ignore_errors=True)
            self._fifo_dir = None

    def info(self) -> BackendInfo:
        """strace's command line and how well its output parsed (``unparsed`` should be 0)."""
        details: dict = {
            "strace": self._argv[0] if self._argv else None,
            "strace_version": ".".join(map(str, self._version)),
            "command": self._argv,
            "seccomp_bpf": self._seccomp,
            "clock_offset_ns": self._offset,
            "left_attached": self._drain is not None,
        }
        for key in ("lines", "unparsed", "unparsed_lines", "incomplete", "incomplete_lines"):
            value = getattr(self._parser, key, 0)
            details[key] = list(value) if isinstance(value, list) else value
        return BackendInfo(self.name, details)


def _attach_refused(pid: int, code: int | None, said: str) -> HeaplineError:
    """Why strace could not attach to ``pid``, from what it printed (its last line)."""
    if not procfs.alive(pid):
        return HeaplineError(f"process {pid} ended before strace attached", Exit.PID_NOT_FOUND)
    last = next((line.strip() for line in reversed(said.splitlines()) if line.strip()), "")
    if "Operation not permitted" in said:
        return HeaplineError(f"the kernel does not let strace trace pid {pid} ({last}; run heapline as root or "
                             "as the process's owner, with kernel.yama.ptrace_scope permitting it)", Exit.NOT_PERMITTED)
    reason = f": {last}" if last else f" (exit status {code})"
    return BackendUnavailable(f"strace could not attach to pid {pid}{reason}", Exit.NO_STRACE)
