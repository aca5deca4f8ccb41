"""``heapline record [OPTIONS] -- COMMAND`` or ``-p PID``: record a trace (and, with --html, its report)."""

from __future__ import annotations

import os
from typing import Any

from tracer.commands.base import Say
from tracer.errors import Exit, HeaplineError
from tracer.record.session import Request, record


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


def run(say: Say, html: str | None = None, env: list[str] | None = None, **options: Any) -> int:
    """Record (``options``: the fields of :class:`Request`; ``env``: ``VAR=VALUE`` items); the exit code
    is the launched command's own (attach: 0, or 130 if interrupted)."""
    req = Request(env=target_env(env), **options)
    result = record(req, say)
    if not req.quiet:
        lost = f", [bold red]{result.lost:,} lost[/]" if result.lost else ", none lost"
        say(f"wrote {req.output}: {result.events:,} events ({result.backend}){lost}")
        if result.interrupted:
            say("stopped by interrupt; the trace is complete up to that moment")
    if html:
        from tracer.commands.report import record_html

        record_html(req.output, html, say=say)
    return result.exit_code
