"""Models that ship with nasframe, so the CLI and benchmarks work without downloads."""
