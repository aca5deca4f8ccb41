"""``heapline record [OPTIONS] -- COMMAND`` or ``-p PID``: record a trace (and, with --html, its report)."""

from __future__ import annotations

import math
import os
from typing import Any

from rich.text import Text

from tracer.commands.base import Say
from tracer.errors import Exit, HeaplineError
from tracer.record.backends.base import ALLOC_METHODS
from tracer.record.session import Request, record
from tracer.units import literal


def target_env(items: list[str] | None) -> dict[str, str] | None:
    """The launched command's environment: heapline's own with each ``VAR=VALUE`` of ``-E`` set."""
    if not items:
        return None
    env = dict(os.environ)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise HeaplineError(f"--env takes VAR=VALUE, not {item!r}", Exit.USAGE)
        env[name] = value
    return env


def check_options(options: dict[str, Any], html: str | None) -> None:
    """Refuse what cannot work before anything is traced or launched (one sentence, exit 2 or 73)."""
    pid, duration, ring_mb = options.get("pid"), options.get("duration"), options.get("ring_mb", 64)
    if pid is not None and pid <= 0:
        raise HeaplineError(f"--pid takes a process id (a positive number), not {pid}", Exit.USAGE)
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise HeaplineError(f"--duration takes a number of seconds above 0, not {duration}", Exit.USAGE)
    alloc = options.get("alloc", "auto")
    if alloc not in ALLOC_METHODS:
        raise HeaplineError(f"--alloc takes {', '.join(ALLOC_METHODS)}, not {alloc!r}", Exit.USAGE)
    if alloc == "preload" and pid is not None:
        raise HeaplineError("--alloc preload needs a command to launch; an attached process keeps the uprobes",
                            Exit.NO_PRELOAD)
    if alloc == "preload" and options.get("stacks"):
        raise HeaplineError("--stacks is not available with --alloc preload yet; use --alloc uprobes", Exit.USAGE)
    if ring_mb is not None and ring_mb < 1:
        raise HeaplineError(f"--ring-mb takes a size of at least 1 (MiB), not {ring_mb}", Exit.USAGE)
    for flag, path in (("-o", options.get("output")), ("--html", html)):
        if path is None:
            continue
        where = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise HeaplineError(f"{flag} {path} is a directory, not a file to write", Exit.OUTPUT_NOT_WRITABLE)
        if not os.path.isdir(where):
            raise HeaplineError(f"cannot write {path}: the directory {where} does not exist", Exit.OUTPUT_NOT_WRITABLE)
        if not os.access(path if os.path.exists(path) else where, os.W_OK):
            raise HeaplineError(f"cannot write {path}: permission denied", Exit.OUTPUT_NOT_WRITABLE)


def run(say: Say, html: str | None = None, env: list[str] | None = None, **options: Any) -> int:
    """Record (``options``: the fields of :class:`Request`; ``env``: ``VAR=VALUE`` items); the exit code
    is the launched command's own (attach: 0, or 130 if interrupted)."""
    check_options(options, html)
    req = Request(env=target_env(env), **options)
    result = record(req, say)
    if not req.quiet:
        lost = (f"{result.lost:,} lost", "bold red") if result.lost else "none lost"
        say(Text.assemble(f"wrote {literal(req.output)}: {result.events:,} events ({result.backend}), ", lost))
        if result.interrupted:
            say("stopped by interrupt; the trace is complete up to that moment")
    if html:
        from tracer.commands.report import record_html

        record_html(req.output, html, say=say)
    return result.exit_code
