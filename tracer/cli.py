"""heapline's command line (typer). Thin: every command delegates to its module."""

from __future__ import annotations

import json
import os
import sys

import typer
from rich.console import Console

from .errors import Exit, HeaplineError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Show how a process's memory moves between its allocator and the kernel, and why it stays.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(e: HeaplineError) -> typer.Exit:
    err.print(f"[bold red]heapline:[/] {e.message}")
    return typer.Exit(int(e.code))


def _say(msg: str) -> None:
    err.print(f"[dim]heapline:[/] {msg}")


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
    html: str | None = typer.Option(None, "--html", help="Also write the HTML report here at the end."),
    env: list[str] | None = typer.Option(
        None, "-E", "--env", help="VAR=VALUE in the launched command's environment (repeatable), e.g. LD_PRELOAD."
    ),
) -> None:
    """Record a command (launch) or a running process (-p) into a trace file."""
    from .recorder import Request
    from .recorder import record as do_record

    target_env = None
    if env:
        target_env = dict(os.environ)
        for item in env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise _fail(HeaplineError(f"--env takes VAR=VALUE, not {item!r}", Exit.USAGE))
            target_env[name] = value
    req = Request(
        output=output,
        command=command or None,
        pid=pid,
        backend=backend,
        duration=duration,
        quiet=quiet,
        no_aslr=no_aslr,
        follow_children=not no_follow,
        ring_mb=ring_mb,
        trace_alloc=not no_alloc,
        env=target_env,
        stacks=stacks,
    )
    try:
        result = do_record(req, _say)
    except HeaplineError as e:
        raise _fail(e) from None
    if not quiet:
        lost = f", [bold red]{result.lost:,} lost[/]" if result.lost else ", none lost"
        _say(f"wrote {output}: {result.events:,} events ({result.backend}){lost}")
        if result.interrupted:
            _say("stopped by interrupt; the trace is complete up to that moment")
    if html:
        from .report_cmd import record_html

        try:
            record_html(output, html, say=_say)
        except HeaplineError as e:
            raise _fail(e) from None
    raise typer.Exit(result.exit_code)


@app.command()
def summary(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    all_processes: bool = typer.Option(False, "--all-processes", help="Count every traced process."),
) -> None:
    """Summarize a trace: the break, mappings, pages released and RSS."""
    from .report_text import print_summary
    from .summary import summarize
    from .tracefile import open_trace

    try:
        t = open_trace(trace)
    except HeaplineError as e:
        raise _fail(e) from None
    s = summarize(t, all_processes=all_processes)
    if as_json:
        json.dump(s, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_summary(s, Console(highlight=False))
    for note in t.notes:
        _say(note)


@app.command()
def report(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    output: str | None = typer.Option(None, "-o", "--output", help="HTML file (default: TRACE with .html)."),
    findings: str | None = typer.Option(None, "--findings", help="Findings JSON to show instead of explaining."),
    no_findings: bool = typer.Option(False, "--no-findings", help="Leave the findings out."),
) -> None:
    """Write one self-contained interactive HTML timeline of a trace."""
    from .report_cmd import report as do_report

    try:
        do_report(trace, output, findings, explain=not no_findings, say=_say)
    except HeaplineError as e:
        raise _fail(e) from None


@app.command()
def compare(
    traces: list[str] = typer.Argument(..., help="Two or more trace files."),
    output: str = typer.Option(..., "-o", "--output", help="HTML file to write."),
    stack: bool = typer.Option(False, "--stack", help="Stack the traces instead of overlaying them."),
) -> None:
    """Compare traces on aligned time axes (e.g. glibc vs jemalloc, before vs after a fix)."""
    from .report_cmd import compare as do_compare

    try:
        do_compare(traces, output, stack=stack, say=_say)
    except HeaplineError as e:
        raise _fail(e) from None


@app.command()
def explain(
    trace: str = typer.Argument(..., help="A trace file written by heapline record."),
    at: float | None = typer.Option(None, "--at", help="Explain the state this many seconds into the recording."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Why memory was or was not returned: findings with their evidence."""
    from .explain import explain as do_explain
    from .report_text import print_findings
    from .tracefile import open_trace

    try:
        t = open_trace(trace)
    except HeaplineError as e:
        raise _fail(e) from None
    found = [f.to_json() for f in do_explain(t, at_ns=None if at is None else int(at * 1e9))]
    if as_json:
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif found:
        print_findings(found, Console(highlight=False), int(t.meta["pid"]))
    else:
        Console(highlight=False).print("no findings")


@app.command()
def demo(
    names: list[str] | None = typer.Argument(None, help="Scenarios to run (all when none is given)."),
    out_dir: str = typer.Option("out/demo", "-o", "--out", help="Folder for the traces and summaries."),
) -> None:
    """Record the scenario programs (workloads/scenarios) and print what heapline finds in each."""
    from .demo import run

    try:
        done = run(list(names or []), out_dir, _say)
    except HeaplineError as e:
        raise _fail(e) from None
    _say(f"{len(done)} traces and summaries in {out_dir}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("[bold red]heapline:[/] interrupted")
        sys.exit(int(Exit.INTERRUPTED))


if __name__ == "__main__":
    main()
