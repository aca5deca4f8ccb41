"""compare names each run by its allocator and environment, and sets their findings side by side."""

from __future__ import annotations

import re

from helpers import ROOT

from tracer.analysis.explain import explain
from tracer.analysis.model import build
from tracer.tracefile import open_trace
from tracer.units import human_bytes
from viz.compare import write_compare
from viz.report import read_findings

TRACES = ROOT / "traces"


def _row(page: str, name: str) -> list[str]:
    m = re.search(rf"<tr><th>{re.escape(name)}</th>(.*?)</tr>", page, re.S)
    assert m, name
    return re.findall(r"<td>(.*?)</td>", m[1], re.S)


def test_glibc_and_jemalloc_runs_are_told_apart(tmp_path) -> None:
    names = ["scenario-allocators", "scenario-allocators-jemalloc"]
    built = write_compare([TRACES / f"{n}.trace" for n in names], tmp_path / "cmp.html")
    page = (tmp_path / "cmp.html").read_text()
    assert built["traces"] == ["1: ./allocators · glibc (libc.so.6)",
                               "2: ./allocators · jemalloc (libjemalloc.so.2) · LD_PRELOAD=libjemalloc.so.2"]
    verdicts, codes, beyond = _row(page, "verdict"), _row(page, "findings"), \
        _row(page, "resident beyond live (final RSS anon − live)")
    for i, n in enumerate(names):
        t = open_trace(str(TRACES / f"{n}.trace"))
        tl = build(t)
        found, lines = read_findings(t, tl, [f.to_json() for f in explain(t)])
        first = next(ln for ln in lines if ln.kind != "note")
        assert first.text.replace("'", "&#x27;") in verdicts[i]  # the run's own verdict, as its page says
        assert codes[i] == ", ".join(sorted({f["code"] for f in found}))
        k = built["figures"][i]
        held = k["rss_anon"]["final"] - k["live_bytes"]["final"]
        assert int(tl.rss["anon"].iloc[-1]) - int(tl.memory["live_bytes"].iloc[-1]) == held
        assert beyond[i].startswith(human_bytes(held))
    assert "FREED_NOT_CONSOLIDATED" in codes[0] and "FREED_NOT_CONSOLIDATED" not in codes[1]
    assert "jemalloc&#x27;s regions" in verdicts[1]


def test_glibc_settings_name_the_run(tmp_path) -> None:
    names = ["scenario-trim-threshold-env", "scenario-trim-threshold-tunables"]
    built = write_compare([TRACES / f"{n}.trace" for n in names], tmp_path / "cmp.html")
    assert built["traces"][0].endswith("· MALLOC_TRIM_THRESHOLD_=16777216")
    assert built["traces"][1].endswith("· GLIBC_TUNABLES=glibc.malloc.trim_threshold=16777216")
