"""Benchmark evaluation: dataset loaders, result files, metrics and reports (docs/evaluation.md)."""
