"""Load the probes with bcc: the sources compiled by LLVM at each recording, where the CO-RE object
(coreload.py) cannot be loaded."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tracer.record.backends.bpf.alloc import captured_stderr

#: the map operations of probes/loader.h, written as bcc's methods (bcc refuses them inside a macro)
DIALECT = {"LOOKUP": "lookup", "UPDATE": "update", "DELETE": "delete", "RB_RESERVE": "ringbuf_reserve",
           "RB_OUTPUT": "ringbuf_output", "TASK_STORAGE_GET": "task_storage_get", "GET_STACKID": "get_stackid"}
_OPERATION = re.compile(r"\b(" + "|".join(DIALECT) + r")\((\w+),\s*")


class BccUnavailable(Exception):
    """bcc cannot load the probes; the message is one sentence."""


def bcc_dialect(text: str) -> str:
    """``LOOKUP(traced, &k)`` as ``traced.lookup(&k)``, and so on (preprocessor lines stay)."""
    return "\n".join(line if line.lstrip().startswith("#") else
                     _OPERATION.sub(lambda m: f"{m.group(2)}.{DIALECT[m.group(1)]}(", line)
                     for line in text.split("\n"))  # fmt: skip


def _first_error(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line and ("error" in line.lower() or "not permitted" in line.lower()):
            return line
    return None


def load(probes: Path, parts: list[str], cflags: list[str], kernel_headers: str) -> Any:
    """bcc's BPF object for the concatenated ``parts`` of ``probes`` (its tracepoints attached)."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise BccUnavailable("bcc's Python bindings are not importable (install Debian's python3-bpfcc)") from e
    text = bcc_dialect("\n".join((probes / p).read_text() for p in parts))
    # bcc reads it while compiling; a launched command must not inherit it (a program that copies
    # its environment, as Python does, would allocate for it)
    had = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = kernel_headers
    with captured_stderr() as said:
        try:
            bpf = BPF(text=text, cflags=[f"-I{probes}", *cflags])
            failure = None
        except Exception as e:  # bcc raises bare Exception on compile/load failures
            failure = e
        finally:
            if had is None:
                del os.environ["BCC_KERNEL_SOURCE"]
            else:
                os.environ["BCC_KERNEL_SOURCE"] = had
    if failure is not None:
        raise BccUnavailable(f"the eBPF probes could not be loaded: {_first_error(said()) or failure}") from failure
    return bpf
