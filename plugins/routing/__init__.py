"""Herd's built-in routing plugins: filters, scorers, transforms and the default policy."""
