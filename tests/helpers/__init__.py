"""Helpers shared by the test modules (and by `benchmarks/`): tiny models, train.py flag lists, launchers."""
