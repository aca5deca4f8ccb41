"""Trace -> timeline frames -> findings, from the trace file alone.

Never imports tracer.record, tracer.commands or viz (tests/unit/test_layers.py).
"""
