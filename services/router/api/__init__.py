"""Thin HTTP handlers over fleet state: fleet, dashboard, settings, models, usage, events."""
