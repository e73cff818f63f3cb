"""Herd's common library: settings, Redis layout, plugin contract, errors and logging."""
