"""Benchmark evaluation: answer generation methods, metrics, result storage and reports."""
