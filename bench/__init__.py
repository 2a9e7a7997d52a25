"""Benchmarks that compare streamlearn with its peers in one run (not timed tests)."""
