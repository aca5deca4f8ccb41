"""heapline: how a process's memory moves between its allocator and the kernel."""

__version__ = "0.1.0"
