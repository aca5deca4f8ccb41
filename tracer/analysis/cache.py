"""What the analysis computed from a read trace, kept while the trace is: the timeline, the live
series and the accounting of each process are asked for by the summary, several findings and the
report, and computed once. The trace file's object knows nothing of it."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_BY_TRACE: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def cached(trace: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` the first time ``key`` is asked of ``trace`` (a tracefile.Trace), then what it gave."""
    mine = _BY_TRACE.setdefault(trace, {})
    if key not in mine:
        mine[key] = compute()
    return mine[key]
