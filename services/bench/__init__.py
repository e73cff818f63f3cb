"""Benchmark runs against a router: one runner shared by `herd bench` and the dashboard."""
