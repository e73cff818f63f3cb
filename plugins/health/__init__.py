"""Herd's built-in health checks, one module per area, each an ordinary plugin."""
