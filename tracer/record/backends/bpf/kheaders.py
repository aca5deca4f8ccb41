"""Kernel headers for bcc: the running kernel's own, or a merged tree from the newest installed.

bcc compiles the probes with clang against kernel headers. Tracepoint and uprobe programs only
need the headers to parse (the tracepoint layouts come from tracefs at run time), so when the
running kernel has no matching headers, Debian's split packages (``linux-headers-X-common`` plus
``linux-headers-X-amd64``) are overlaid into one tree in a cache folder and handed to bcc as
``BCC_KERNEL_SOURCE``. That is never done silently: the caller prints the returned note.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import Exit, HeaplineError

SRC = Path("/usr/src")


@dataclass
class Headers:
    path: str
    exact: bool
    note: str | None  # one line to show the user when not exact


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "heapline" / "kernel-headers"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def _arch_flavour() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _overlay(dest: Path, layers: list[Path]) -> None:
    """Symlink every file of each layer into dest; later layers win."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for layer in layers:
        for root, dirs, files in os.walk(layer, followlinks=True):
            rel = Path(root).relative_to(layer)
            target_dir = tmp / rel
            target_dir.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = target_dir / f
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(Path(root) / f)
            dirs[:] = [d for d in dirs if d not in (".git",)]
    try:
        tmp.rename(dest)
    except OSError:  # another heapline built it meanwhile
        if not (dest / "include").is_dir():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def find(release: str | None = None) -> Headers:
    release = release or platform.release()
    override = os.environ.get("BCC_KERNEL_SOURCE")
    if override:
        return Headers(override, exact=False, note=None)
    build = Path("/lib/modules") / release / "build"
    if (build / "include").is_dir():
        return Headers(str(build), exact=True, note=None)
    flavour = _arch_flavour()
    candidates = sorted(
        (p for p in SRC.glob(f"linux-headers-*-{flavour}") if p.is_dir()),
        key=lambda p: _version_key(p.name),
    )
    if not candidates:
        raise HeaplineError(
            f"no kernel headers for {release} and none installed to fall back on; "
            f"install linux-headers-{flavour} (or linux-headers-{release})",
            Exit.NO_HEADERS,
        )
    arch_dir = candidates[-1]
    common = arch_dir.with_name(arch_dir.name[: -len(flavour)] + "common")
    layers = [common, arch_dir] if common.is_dir() else [arch_dir]
    dest = _cache_dir() / arch_dir.name.removeprefix("linux-headers-")
    if not (dest / "include").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _overlay(dest, layers)
    note = (
        f"kernel headers for {release} are not installed; using {arch_dir.name}"
        f"{' + common' if len(layers) > 1 else ''} merged in {dest}"
    )
    return Headers(str(dest), exact=False, note=note)
