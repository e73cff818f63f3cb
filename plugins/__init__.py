"""Herd's built-in plugins: scorers, filters, transforms and health checks."""
