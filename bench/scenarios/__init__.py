"""The scenarios of `make bench`, one module per group (see docs/benchmarks.md)."""
