"""Speed and memory measurements on this machine (used by `nlpkit bench` and `benchmarks/`)."""
