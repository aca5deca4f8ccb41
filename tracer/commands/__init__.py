"""One module per CLI verb: what each does between the command line and the rooms below.

The only part of tracer that may import viz (tests/unit/test_layers.py).
"""
