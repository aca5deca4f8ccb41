"""Humanized units, and text from the target shown as text, used only at the edges (CLI, HTML)."""

from __future__ import annotations

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    """Bytes for people, the one rule of every output (sentences, tables, hovers; report.js's ``hb``
    is the same): B below 1 KiB, else three significant figures in the largest unit under 1024,
    trailing zeros dropped (4 KiB, 1.04 MiB, 30.5 MiB, 392 KiB). The exact count goes beside it
    where it matters (evidence, hovers)."""
    sign = "-" if n < 0 else ""
    v = float(abs(n))
    i = 0
    while v >= 1024 and i < len(_BYTE_UNITS) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f"{sign}{int(v)} B"
    digits = 2 if v < 10 else 1 if v < 100 else 0
    if round(v, digits) >= 1024 and i < len(_BYTE_UNITS) - 1:  # 1023.7 KiB reads as 1 MiB
        v /= 1024
        i += 1
        digits = 2
    text = f"{v:,.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text} {_BYTE_UNITS[i]}"


def human_ns(ns: float) -> str:
    v = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{int(v)} ns"


def human_rate(per_s: float) -> str:
    for unit, scale in (("M/s", 1e6), ("k/s", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.1f} {unit}"
    return f"{per_s:.0f}/s"


def _visible_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}  # C0, DEL, C1
    table |= {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
    # the marks that reorder or hide text (bidi overrides and isolates, zero-width marks)
    table |= {c: f"\\u{c:04x}" for c in (0x200B, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                          0xFEFF)}
    # bytes that were not UTF-8 (a command line or path decoded with surrogateescape): the byte itself;
    # other lone surrogates (no text can be written with them) as their code
    table |= {c: f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c < 0xDD00 else f"\\u{c:04x}" for c in range(0xD800, 0xE000)}
    return table


_VISIBLE = _visible_table()


def literal(text: object) -> str:
    """``text`` as it is, with every control character made visible the way Python writes it in a
    string (ESC is ``\\x1b``, a newline ``\\n``): what the target wrote (its command line, paths,
    names) never reaches the terminal as escapes, and is printed as text, never as markup."""
    return str(text).translate(_VISIBLE)
