"""bellhook's benchmark harness: `make bench` / `make bench-quick` (see docs/benchmarks.md)."""
