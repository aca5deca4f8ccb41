"""The eBPF backend and what only it needs: loading the probes, the rings, uprobes, allocator
discovery, probe sites, calibration, stacks, stale probe cleanup and kernel headers."""
