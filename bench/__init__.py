"""Benchmarks: run from the repository root, e.g. `python -m bench.fleet_vs_loop` (see bench/README.md)."""
