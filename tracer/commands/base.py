"""What every command shares: where it says things, and how it ends.

A command is a function ``run(say, **options) -> int`` in its own module: it does its work through
the rooms below (``tracer.record``, ``tracer.analysis``, ``viz``), writes its output, reports progress
and notes through ``say`` (one line each, on stderr) and returns the process's exit code. Errors a
user can hit are :class:`tracer.errors.HeaplineError`; ``tracer.cli`` turns them into one sentence
and their exit code, in one place.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

#: what a command says: plain text (printed as it is: control characters made visible, no markup),
#: or a Text the command styled itself from literal parts
Say = Callable[[str | Text], None]


def quiet(_: str | Text) -> None:
    """A ``say`` that says nothing."""
