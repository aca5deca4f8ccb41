"""Live processes only: launch or attach, drain a backend into the trace file, stop.

Never imports tracer.analysis, tracer.commands or viz (tests/unit/test_layers.py).
"""
