"""Benchmarks: retrieval quality, harmful-content retrieval, reasoning-heavy retrieval, efficiency."""
