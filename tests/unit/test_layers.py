"""The rooms of the code and who may import whom (docs/DEVELOPING.md, "Layout"), checked on every
module's imports as Python parses them (top level and inside functions alike)."""

from __future__ import annotations

import ast

from helpers import ROOT

CONTRACT = {f"tracer.{m}" for m in ("events", "fields", "columns", "tracefile", "tracecheck", "tracescan",
                                        "decode", "errors", "units", "memavail")}
CONTRACT |= {"tracer"}
ROOMS = ("tracer.record", "tracer.analysis", "tracer.commands", "tracer.cli", "viz")


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    if module in CONTRACT:
        return "contract"
    return next((r for r in ROOMS if module == r or module.startswith(r + ".")), "other")


def is_module(name: str) -> bool:
    return (ROOT / (name.replace(".", "/") + ".py")).exists()


def imports(path) -> set[str]:
    """Every heapline module ``path`` imports (``from tracer.x import y`` counts tracer.x.y when it is a module)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".")[: len(me.split(".")) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join([*pkg, base] if base else pkg)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}")}
    return {m for m in out if m.split(".")[0] in ("tracer", "viz")}


ALLOWED = {
    "contract": {"contract"},
    "tracer.record": {"contract", "tracer.record"},
    "tracer.analysis": {"contract", "tracer.analysis"},
    "viz": {"contract", "tracer.analysis", "viz"},
    "tracer.commands": {"contract", "tracer.record", "tracer.analysis", "tracer.commands", "viz"},
    "tracer.cli": {"contract", "tracer.commands"},
}


def test_every_module_imports_only_the_rooms_it_may() -> None:
    modules = sorted([*(ROOT / "tracer").rglob("*.py"), *(ROOT / "viz").rglob("*.py")])
    assert len(modules) > 40
    wrong = []
    for path in modules:
        mine = room(module_name(path))
        assert mine != "other", f"{module_name(path)} is in no room"
        for imported in sorted(imports(path)):
            if room(imported) not in ALLOWED[mine]:
                wrong.append(f"{module_name(path)} ({mine}) imports {imported} ({room(imported)})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_a_violation(tmp_path) -> None:
    bad = ROOT / "tracer" / "analysis" / "_layers_probe.py"
    bad.write_text("def f():\n    from tracer.record import procfs\n    from ..record.backends import base\n")
    try:
        assert {"tracer.record.procfs", "tracer.record.backends.base"} <= imports(bad)
        assert room("tracer.record.procfs") not in ALLOWED[room(module_name(bad))]
    finally:
        bad.unlink()
