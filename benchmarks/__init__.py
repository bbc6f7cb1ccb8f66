"""Benchmarks: `python -m benchmarks.ingest` (`make bench-ingest`). See benchmarks/README.md."""
