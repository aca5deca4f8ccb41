"""What came from the target (its command line, paths, names) is printed as text: never read as
rich markup, never sent to the terminal as an escape sequence. One rule everywhere
(tracer.units.literal): control characters are shown the way Python writes them, ESC as \\x1b."""

from __future__ import annotations

import os
import shutil

import pytest
from damage import Parts
from helpers import ROOT, run_heapline

from tracer.units import literal

#: the strings of heapline issue 13: markup that crashed or was eaten, a title change and a screen clear
HOSTILE = ["x=[...]; del x", "[/b]", "[bold]b[/bold]", "\x1b]0;PWNED\x07\x1b[2J"]
SHOWN = ["x=[...]; del x", "[/b]", "[bold]b[/bold]", "\\x1b]0;PWNED\\x07\\x1b[2J"]
WIDE = {**os.environ, "COLUMNS": "400"}  # one line per printed line: nothing wraps


def no_raw_controls(text: str) -> bool:
    return not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in text)


def test_the_rule() -> None:
    assert literal("a\x1b[2Jb\x07\x7f\x9b") == "a\\x1b[2Jb\\x07\\x7f\\x9b"
    assert literal("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    assert literal("\u202eabc") == "\\u202eabc"  # a right-to-left override
    assert literal("caf\udce9") == "caf\\xe9"  # a byte that was not UTF-8, as os.fsdecode keeps it
    assert literal("[/b] [bold]é[/bold] \\x") == "[/b] [bold]é[/bold] \\x"  # text is left as it is


@pytest.fixture(scope="module")
def hostile_trace(tmp_path_factory) -> str:
    """A real recording whose command line is the hostile strings, under a path that is markup too."""
    where = tmp_path_factory.mktemp("t") / "d[" / "b]"  # d[/b]/
    where.mkdir(parents=True)
    p = Parts(ROOT / "traces" / "phases.trace")
    path = where / "t.trace"
    path.write_bytes(p.write(header={**p.header, "command": ["python3", "-c", *HOSTILE]}))
    return str(path)


def test_summary_prints_the_command_as_it_is(hostile_trace: str) -> None:
    r = run_heapline("summary", hostile_trace, env=WIDE)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    first = r.stdout.splitlines()[0]
    for shown in SHOWN:
        assert shown in first
    assert no_raw_controls(r.stdout + r.stderr)


def test_explain_and_the_error_sentences_show_paths_as_they_are(hostile_trace: str, tmp_path) -> None:
    r = run_heapline("explain", hostile_trace, env=WIDE)
    assert r.returncode == 0 and no_raw_controls(r.stdout + r.stderr), r.stderr
    missing = os.path.join(os.path.dirname(hostile_trace), "no\x1b[2J[bold]such[/bold].trace")
    for verb in ("summary", "explain"):
        r = run_heapline(verb, missing, env=WIDE)
        assert r.returncode == 65 and no_raw_controls(r.stderr)
        assert r.stderr == f"heapline: no such trace file: {literal(missing)}\n"


def test_report_and_compare_say_where_they_wrote(hostile_trace: str) -> None:
    out = os.path.join(os.path.dirname(hostile_trace), "r\x1b[2J[bold].html")
    r = run_heapline("report", hostile_trace, "-o", out, env=WIDE)
    assert r.returncode == 0 and f"heapline: wrote {literal(out)} (" in r.stderr and no_raw_controls(r.stderr)
    page = open(out, encoding="utf-8").read()
    assert "\x1b" not in page and "\\x1b]0;PWNED\\x07\\x1b[2J" in page and "[bold]b[/bold]" in page
    out = os.path.join(os.path.dirname(hostile_trace), "c[bold]x.html")
    r = run_heapline("compare", hostile_trace, str(ROOT / "traces" / "phases.trace"), "-o", out, env=WIDE)
    assert r.returncode == 0 and f"heapline: wrote {out} (" in r.stderr
    page = open(out, encoding="utf-8").read()
    assert "\x1b" not in page and "\\x1b]0;PWNED\\x07\\x1b[2J" in page


def test_a_damaged_trace_under_a_hostile_path_is_one_visible_sentence(hostile_trace: str) -> None:
    bad = hostile_trace.replace("t.trace", "cut\x1b[2J.trace")
    shutil.copyfile(hostile_trace, bad)
    os.truncate(bad, 20)
    r = run_heapline("summary", bad, env=WIDE)
    assert r.returncode == 65 and r.stderr.startswith(f"heapline: {literal(bad)} is not a readable heapline trace")
    assert r.stderr.count("\n") == 1 and no_raw_controls(r.stderr)
