"""Start a command held before execve, so tracing is live before its first instruction."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal

from tracer.errors import Exit, HeaplineError

ADDR_NO_RANDOMIZE = 0x0040000


def resolve(argv0: str) -> str:
    """Absolute path of the program, or a clear error (command not found / not executable)."""
    if "/" in argv0:
        path = argv0
        if not os.path.exists(path):
            raise HeaplineError(f"command not found: {argv0}", Exit.COMMAND_NOT_FOUND)
    else:
        found = shutil.which(argv0)
        if found is None:
            raise HeaplineError(f"command not found: {argv0}", Exit.COMMAND_NOT_FOUND)
        path = found
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise HeaplineError(f"not an executable file: {argv0}", Exit.NOT_EXECUTABLE)
    return path


class HeldChild:
    """A forked child that waits on a pipe, then execs ``argv``.

    Between fork and exec the child runs only heapline's code; the tracer arms its probes on the
    child's pid and then calls :meth:`release`. An exec failure is reported back through a
    close-on-exec pipe, so it surfaces as an error instead of a silent exit code.
    """

    def __init__(self, path: str, argv: list[str], env: dict[str, str] | None = None, no_aslr: bool = False):
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child: only async-signal-safe-ish work until exec
            try:
                os.close(go_w)
                os.close(err_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                if no_aslr:
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.personality(ADDR_NO_RANDOMIZE)
                if os.read(go_r, 1) != b"g":
                    os._exit(0)  # the tracer gave up before releasing us
                os.close(go_r)
                if env is None:
                    os.execv(path, argv)
                else:
                    os.execve(path, argv, env)
            except BaseException as e:  # noqa: BLE001 - report anything back to the parent
                try:
                    os.write(err_w, f"{type(e).__name__}: {e}".encode()[:500])
                finally:
                    os._exit(127)
        os.close(go_r)
        os.close(err_w)
        self.pid = pid
        self._go = go_w
        self._err = err_r
        self.status: int | None = None

    def release(self) -> None:
        """Let the child exec; raise if the exec failed."""
        os.write(self._go, b"g")
        os.close(self._go)
        msg = os.read(self._err, 600)  # returns b"" once exec closed the pipe
        os.close(self._err)
        if msg:
            self.wait(block=True)
            raise HeaplineError(f"could not start the command: {msg.decode(errors='replace')}", Exit.NOT_EXECUTABLE)

    def abandon(self) -> None:
        """Tell the child to exit without exec (setup failed)."""
        try:
            os.close(self._go)
        except OSError:
            pass
        self.wait(block=True)

    def wait(self, block: bool = False) -> int | None:
        """Exit code (128+signal when killed, as a shell reports it), or None while running."""
        if self.status is not None:
            return self.status
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return self.status
        if pid == 0:
            return None
        self.status = os.waitstatus_to_exitcode(status)
        if self.status < 0:
            self.status = 128 - self.status
        return self.status
