"""The trace recorder: copies the traces stream into latency.db (a process, or a leader job)."""
