"""The summary and findings of every committed sample trace, compared byte for byte with the
JSON they gave when the goldens were written (tests/data/golden). A change of the model or of a
finding that moves any figure shows here; regenerate the goldens on purpose only, with
``HEAPLINE_WRITE_GOLDEN=1``, and say in the commit what changed and why."""

from __future__ import annotations

import os

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from tracer.cli import app

TRACES = sorted((ROOT / "traces").glob("*.trace"))
GOLDEN = ROOT / "tests" / "data" / "golden"
VIEWS = {"summary": ("summary", "--json"), "all": ("summary", "--json", "--all-processes"),
         "explain": ("explain", "--json")}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("trace", TRACES, ids=[t.stem for t in TRACES])
def test_sample_json_is_unchanged(trace, view: str) -> None:
    cmd, *args = VIEWS[view]
    r = CliRunner().invoke(app, [cmd, str(trace), *args])  # in-process: 51 runs
    assert r.exit_code == 0, r.output
    golden = GOLDEN / f"{trace.stem}.{view}.json"
    if os.environ.get("HEAPLINE_WRITE_GOLDEN") == "1":
        golden.write_text(r.stdout)
    assert r.stdout == golden.read_text()
