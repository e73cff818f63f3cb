"""The plugin contract is documented: every hook and every built-in health check."""

from __future__ import annotations

import inspect
from pathlib import Path

from shared import hookspecs
from shared.plugins import build_plugin_manager

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_hook_is_documented_with_its_signature() -> None:
    text = (DOCS / "plugins.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("herd_")]
    assert "herd_register_health_checks" in hooks
    for name in hooks:
        assert f"### `{name}(" in text, f"docs/plugins.md has no section for {name}"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


def test_every_built_in_check_is_documented() -> None:
    text = (DOCS / "plugins.md").read_text()
    manager = build_plugin_manager()
    ids = [c.check_id for batch in manager.hook.herd_register_health_checks() for c in batch]
    missing = [i for i in ids if f"`{i}`" not in text and not i.startswith("sample_")]
    assert not missing, f"docs/plugins.md does not list: {missing}"


def test_every_dashboard_endpoint_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    for path in ("health", "recommendations", "settings", "model-management", "pull",
                 "delete", "usage", "apps", "trends", "models", "traces", "benchmarks"):
        assert f"/dashboard/api/{path}" in text, path
    assert "/dashboard/events" in text
    assert "/metrics" in text
