"""Builds the plugin manager: the built-ins, plugins named by import path, then third
parties' entry points, minus the blocked."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from shared import hookspecs

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "build_plugin_manager", "load_plugin"]

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


def load_plugin(spec: str) -> object:
    """The plugin an import reference names: `package.module`, or `package.module:attribute`
    (an object whose methods are the hook implementations), as in an entry point."""
    module_name, _, attribute = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load plugin {spec!r}: {exc}") from exc


def build_plugin_manager(
    disabled: Iterable[str] = (), extra: Iterable[str] = ()
) -> pluggy.PluginManager:
    """Register defaults, the `extra` import references (`FLEET_PLUGINS`) and entry points,
    skipping any name in `disabled`. An extra plugin's name is its reference."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in disabled:
        manager.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if not manager.is_blocked(module_name):
            manager.register(importlib.import_module(module_name), name=module_name)
    for spec in extra:
        if spec.strip() and not manager.is_blocked(spec.strip()):
            manager.register(load_plugin(spec), name=spec.strip())
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.check_pending()
    return manager
