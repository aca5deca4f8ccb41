"""Errors a user can hit: one clear sentence each, and a distinct exit code.

In launch mode a finished recording exits with the target's own exit code (as strace does), so
these codes only mean "heapline failed" when the recording did not run to the end.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    USAGE = 2
    NOT_ROOT = 10
    NO_EBPF = 11
    NO_TRACEFS = 12
    NO_HEADERS = 13
    NO_STRACE = 14
    NO_PRELOAD = 15  # --alloc preload: this command cannot be preloaded (static, setuid, attached, not built)
    PID_NOT_FOUND = 20
    NOT_PERMITTED = 21  # the kernel will not let heapline read or trace that process
    PID_NOT_IN_TRACE = 22  # report/explain --pid: the trace has no events of that process
    NO_STACKS = 23  # export --pprof: the trace recorded no allocation stacks (record --stacks)
    BAD_TRACE = 65
    NO_MEMORY = 69  # the trace needs more memory than this machine (or its limits) can give
    OUTPUT_NOT_WRITABLE = 73
    NOT_EXECUTABLE = 126
    COMMAND_NOT_FOUND = 127
    INTERRUPTED = 130


class HeaplineError(Exception):
    """An error with a one-sentence message for the user and an exit code."""

    code: Exit = Exit.USAGE

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class BackendUnavailable(HeaplineError):
    """A backend cannot run here (the message says why); --backend auto falls back."""


class TraceFileError(HeaplineError):
    code = Exit.BAD_TRACE


class TooBig(HeaplineError):
    """The work needs more memory than this process can get (the sentence gives both figures)."""

    code = Exit.NO_MEMORY
