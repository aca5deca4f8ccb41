"""What every recording backend provides to the session."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from tracer.columns import Columns


@dataclass
class LaunchSpec:
    path: str  # resolved executable
    argv: list[str]
    env: dict[str, str] | None = None
    no_aslr: bool = False


#: --alloc: how allocator calls are traced (auto: uprobes; preload: the in-process library, launch only)
ALLOC_METHODS = ("auto", "uprobes", "preload")


@dataclass
class Options:
    follow_children: bool = True  # fork/clone children and threads are traced too
    rss_interval_ns: int = 1_000_000  # in-kernel coalescing of rss_stat / /proc sampling period
    trace_alloc: bool = True  # malloc/free & friends with uprobes (bpf backend)
    stacks: bool = False  # the user stack of every allocation (bpf backend)
    alloc: str = "auto"  # ALLOC_METHODS
    alloc_block: bool = False  # preload: a full ring makes the writer wait instead of losing the record


@dataclass
class BackendInfo:
    """Metadata a backend contributes to the trace header."""

    name: str
    details: dict = field(default_factory=dict)


class Backend(ABC):
    name: str = "?"

    def __init__(self, options: Options) -> None:
        self.options = options
        self.notes: list[str] = []  # one-line notices for the user (e.g. why allocator calls are not traced)
        self.say: Callable[[str], None] = lambda msg: None  # progress of long steps, as they happen

    @abstractmethod
    def launch(self, spec: LaunchSpec) -> int:
        """Start the command such that its first instruction runs with tracing live; return its pid."""

    @abstractmethod
    def attach(self, pid: int) -> None:
        """Start tracing a running process (and, if following, its future children)."""

    @abstractmethod
    def poll(self) -> Columns:
        """Events gathered since the last call, as columns of EVENT_DTYPE; never blocks for long."""

    @abstractmethod
    def exit_status(self) -> int | None:
        """Launch mode: the target's exit code (128+signal if killed) once it has ended, else None."""

    @abstractmethod
    def lost(self) -> dict[int, int]:
        """Events lost so far, per CPU; key -1 for losses not tied to a CPU (e.g. a probe the kernel skipped)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop tracing and release everything; an attached target keeps running.

        Events not yet polled at that moment are kept: the next poll() returns them."""

    def info(self) -> BackendInfo:
        return BackendInfo(self.name)
