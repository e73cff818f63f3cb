"""Builds the plugin manager: the built-ins, then third parties' entry points, minus the blocked."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from shared import hookspecs

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "build_plugin_manager"]

ENTRY_POINT_GROUP = "herd.plugins"

# Herd's own plugins, registered exactly like a third party's; the name is the module's.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.health.nodes",
    "plugins.health.models",
    "plugins.health.requests",
    "plugins.health.queues",
    "plugins.routing.filters",
    "plugins.routing.scorers",
    "plugins.routing.transforms",
    "plugins.routing.policy",
)


def build_plugin_manager(disabled: Iterable[str] = ()) -> pluggy.PluginManager:
    """Register defaults and entry points, skipping any name in `disabled`."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in disabled:
        manager.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if not manager.is_blocked(module_name):
            manager.register(importlib.import_module(module_name), name=module_name)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.check_pending()
    return manager
