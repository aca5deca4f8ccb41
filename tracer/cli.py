"""heapline's command line: typer wiring only. Each verb is a module of tracer.commands; errors a
user can hit end here, in one place, as one sentence and their exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from tracer import memavail
from tracer.errors import Exit, HeaplineError
from tracer.units import human_bytes, literal

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Show how a process's memory moves between its allocator and the kernel, and why it stays.",
)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def _line(style: str, msg: str | Text) -> Text:
    """``heapline: MSG`` as text, never markup: a message quotes paths and commands from the target,
    shown with their control characters made visible (a Text is a command's own styled line)."""
    return Text.assemble(("heapline:", style), " ", msg if isinstance(msg, Text) else literal(msg))


def _say(msg: str | Text) -> None:
    err.print(_line("dim", msg))


def _run(verb: Callable[..., int | Any], *args: Any, **options: Any) -> None:
    """Run one command; its exit code, or a HeaplineError's sentence and code."""
    try:
        code = verb(_say, *args, **options)
    except HeaplineError as e:
        err.print(_line("bold red", e.message))
        raise typer.Exit(int(e.code)) from None
    except MemoryError:  # past the estimate open_trace checks: the work took more than there was
        err.print(_line("bold red", "ran out of memory: the trace needs more than this process can get "
                                    f"({human_bytes(memavail.available())} left)"))
        raise typer.Exit(int(Exit.NO_MEMORY)) from None
    raise typer.Exit(int(code or 0))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def record(
    command: list[str] | None = typer.Argument(None, help="The command to launch (after --)."),
    output: str = typer.Option("heapline.trace", "-o", "--output", help="Trace file to write."),
    pid: int | None = typer.Option(None, "-p", "--pid", help="Attach to this running process instead."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many seconds."),
    backend: str = typer.Option("auto", "--backend", help="auto (bpf, else strace), bpf or strace."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No status line."),
    no_aslr: bool = typer.Option(False, "--no-aslr", help="Launch with address randomization off."),
    no_follow: bool = typer.Option(
        False, "--no-follow", help="Trace the target alone, not the processes it forks (syscalls and allocator calls)."
    ),
    ring_mb: int = typer.Option(64, "--ring-mb", help="Size of the kernel event ring buffer."),
    no_alloc: bool = typer.Option(False, "--no-alloc", help="Syscalls only: do not trace malloc/free & friends."),
    stacks: bool = typer.Option(False, "--stacks", help="Record the user stack of every allocation."),
    alloc: str = typer.Option(
        "auto", "--alloc", help="How allocator calls are traced: auto (uprobes), uprobes, or preload (a library "
        "loaded into a launched command, writing to shared memory)."
    ),
    alloc_block: bool = typer.Option(
        False, "--alloc-block", help="With --alloc preload: a full ring makes the command wait, nothing is lost."
    ),
    html: str | None = typer.Option(None, "--html", help="Also write the HTML report here at the end."),
    env: list[str] | None = typer.Option(
        None, "-E", "--env", help="VAR=VALUE in the launched command's environment (repeatable), e.g. LD_PRELOAD."
    ),
) -> None:
    """Record a command (launch) or a running process (-p) into a trace file."""
    from tracer.commands import record as cmd

    _run(cmd.run, output=output, command=command or None, pid=pid, backend=backend, duration=duration, quiet=quiet,
         no_aslr=no_aslr, follow_children=not no_follow, ring_mb=ring_mb, trace_alloc=not no_alloc, env=env,
         stacks=stacks, html=html, alloc=alloc, alloc_block=alloc_block)


@app.command()
def summary(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    all_processes: bool = typer.Option(False, "--all-processes", help="Count every traced process."),
) -> None:
    """Summarize a trace: the break, mappings, pages released and RSS."""
    from tracer.commands import summary as cmd

    _run(cmd.run, trace, as_json=as_json, all_processes=all_processes)


@app.command()
def report(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    output: str | None = typer.Option(None, "-o", "--output", help="HTML file (default: TRACE with .html)."),
    findings: str | None = typer.Option(None, "--findings", help="Findings JSON to show instead of explaining."),
    no_findings: bool = typer.Option(False, "--no-findings", help="Leave the findings out."),
    pid: int | None = typer.Option(None, "--pid", help="Draw this traced process (default: the traced one)."),
) -> None:
    """Write one self-contained interactive HTML timeline of a trace."""
    from tracer.commands import report as cmd

    _run(cmd.run, trace, output, findings, no_findings=no_findings, pid=pid)


@app.command()
def compare(
    traces: list[str] = typer.Argument(..., help="Two or more trace files."),
    output: str = typer.Option(..., "-o", "--output", help="HTML file to write."),
    stack: bool = typer.Option(False, "--stack", help="Stack the traces instead of overlaying them."),
) -> None:
    """Compare traces on aligned time axes (e.g. glibc vs jemalloc, before vs after a fix)."""
    from tracer.commands import compare as cmd

    _run(cmd.run, traces, output, stack=stack)


@app.command()
def explain(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    at: float | None = typer.Option(None, "--at", help="Explain the state this many seconds into the recording."),
    pid: int | None = typer.Option(None, "--pid", help="Explain this traced process (default: the traced one)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The heap accounting at a moment, and why memory was or was not returned: findings with evidence."""
    from tracer.commands import explain as cmd

    _run(cmd.run, trace, at=at, as_json=as_json, pid=pid)


@app.command()
def export(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    perfetto: str | None = typer.Option(None, "--perfetto", help="Write a Perfetto trace (ui.perfetto.dev) here."),
    pprof: str | None = typer.Option(None, "--pprof", help="Write a gzipped pprof profile of the allocation "
                                     "sites here (needs a trace recorded with --stacks)."),
    pid: int | None = typer.Option(None, "--pid", help="Export this traced process only."),
) -> None:
    """Export a trace for Perfetto (memory counters, calls, findings) or pprof (bytes by allocation site)."""
    from tracer.commands import export as cmd

    _run(cmd.run, trace, perfetto=perfetto, pprof=pprof, pid=pid)


@app.command()
def demo(
    names: list[str] | None = typer.Argument(None, help="Scenarios to run (all when none is given)."),
    out_dir: str = typer.Option("out/demo", "-o", "--out", help="Folder for the traces and summaries."),
) -> None:
    """Record the scenario programs (workloads/scenarios) and print what heapline finds in each."""
    from tracer.commands import demo as cmd

    _run(cmd.main, list(names or []), out_dir)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print(_line("bold red", "interrupted"))
        sys.exit(int(Exit.INTERRUPTED))


if __name__ == "__main__":
    main()
