"""One self-contained HTML page: plotly.js inlined, no network at all.

The plotly.js inlined is its "basic" partial bundle (trace types scatter, bar and pie; the figures
use scatter and bar), vendored in ``static/`` with its licence: 1.2 MB instead of the full
bundle's 4.8 MB, and parsed in a quarter of the time. ``make plotly`` fetches it again with npm
(``PLOTLY_VERSION``); nothing needs npm to build or test a report.

Everything that came from the traced program (argv, paths, symbol names, findings) reaches the
page through :func:`esc` (HTML text and attributes) or inside the JSON data block, which
:func:`script_json` makes unable to close its ``<script>`` element. A Content-Security-Policy
allows only this page's own scripts (by hash): no inline event handler, no remote resource.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from tracer.units import literal

STATIC = Path(__file__).resolve().parent / "static"
PLOTLY = "plotly-basic.min.js"  # with plotly-basic.LICENSE beside it
#: the trace types the vendored bundle registers; a figure may use no other
PLOTLY_TRACES = ("scatter", "bar", "pie")


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute, its control characters made visible
    (:func:`tracer.units.literal`, the rule of every output)."""
    return html.escape(literal(value), quote=True)


def pack(obj: Any, seen: dict[int, int] | None = None) -> Any:
    """Figure specs -> JSON-ready: numeric numpy arrays become base64 typed arrays ({"dtype": "f8", "bdata"});
    an array object met again (one time axis shared by several series) becomes {"ref": n} to the first."""
    seen = {} if seen is None else seen
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fiub":
            if id(obj) in seen:
                return {"ref": seen[id(obj)]}
            seen[id(obj)] = len(seen)
            data = np.ascontiguousarray(obj, dtype="<f8")
            return {"dtype": "f8", "bdata": base64.b64encode(data.tobytes()).decode("ascii"), "id": seen[id(obj)]}
        return [pack(v, seen) for v in obj.tolist()]
    if isinstance(obj, dict):
        return {str(k): pack(v, seen) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [pack(v, seen) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def script_json(obj: Any) -> str:
    """JSON that can sit inside <script>: no '<', '>' or '&' survive unescaped (so no '</script>')."""
    text = json.dumps(pack(obj), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def plotly_js() -> str:
    js = (STATIC / PLOTLY).read_text(encoding="utf-8")
    return js.replace("</script", "<\\/script")


@cache
def static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def document(title: str, body: str, data: dict[str, Any]) -> str:
    """The page: ``body`` is trusted HTML built with :func:`esc`; ``data`` goes to the script as JSON."""
    scripts = [plotly_js(), static("report.js")]
    csp = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
           f"script-src {' '.join(_sha256(s) for s in scripts)}; base-uri 'none'; form-action 'none'")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"color-scheme\" content=\"light dark\">\n",
        f"<title>{esc(title)}</title>\n<style>\n{static('report.css')}</style>\n</head>\n<body>\n",
        body,
        f"\n<script type=\"application/json\" id=\"hl-data\">{script_json(data)}</script>\n",
        f"<script>{scripts[0]}</script>\n<script>{scripts[1]}</script>\n</body>\n</html>\n",
    ])


def table(rows: list[tuple[str, str]], cls: str = "facts") -> str:
    """A two-column table; both cells are trusted HTML (escape values with :func:`esc` first)."""
    body = "".join(f"<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=\"{cls}\">{body}</table>"
