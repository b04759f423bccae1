"""Benchmark evaluation: dataset loaders, result files, metrics and reports (GRM_SPEC.md §6)."""
