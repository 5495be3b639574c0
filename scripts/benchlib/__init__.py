"""Helpers of scripts/bench.py: fresh servers' state, loading, running the indexer, the COPY
limit, profiles and the report. See docs/benchmarks.md for the method."""
