"""Benchmarks run against the stack (``make bench-*``); a package, so tests import helpers."""
