"""Health checks as plugins: built-ins register, a third party's loads by entry point and
can be disabled with FLEET_DISABLED_PLUGINS.

The third-party package is tests/plugin_pkg (`pip install -e tests/plugin_pkg`).
"""

from __future__ import annotations

import asyncio
import copy
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from shared.health import HealthCheck
from shared.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, build_plugin_manager
from shared.settings import Settings

EXAMPLE = json.loads(
    (Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json").read_text()
)
BUILT_IN_CHECKS = {
    "offline_nodes", "degraded_nodes", "memory_pressure", "underutilised_nodes",
    "model_thrashing", "request_timeouts", "error_rate", "retry_rate", "client_disconnects",
    "connection_failures", "queue_saturation", "zombie_requests",
}
SAMPLE = "sample_check"


def _sample_installed() -> bool:
    return any(ep.name == SAMPLE for ep in entry_points(group=ENTRY_POINT_GROUP))


needs_sample = pytest.mark.skipif(
    not _sample_installed(), reason="pip install -e tests/plugin_pkg first"
)


def checks(disabled: tuple[str, ...] = ()) -> list[HealthCheck]:
    manager = build_plugin_manager(disabled)
    return [c for batch in manager.hook.herd_register_health_checks() for c in batch]


def test_every_built_in_check_is_a_default_plugin() -> None:
    health_modules = [m for m in DEFAULT_PLUGINS if m.startswith("plugins.health.")]
    assert len(health_modules) == 4
    found = checks()
    ids = [c.check_id for c in found]
    assert set(ids) >= BUILT_IN_CHECKS
    assert len(ids) == len(set(ids)), "check ids must be unique"
    assert all(isinstance(c, HealthCheck) for c in found)


def test_a_built_in_module_can_be_disabled_like_any_plugin() -> None:
    ids = {c.check_id for c in checks(("plugins.health.queues",))}
    assert "queue_saturation" not in ids
    assert "offline_nodes" in ids


def heartbeat(node_id: str) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["node_id"] = node_id
    return body


async def spare_findings(
    settings: Settings, redis_url: str, expect: bool,
) -> list[dict[str, Any]]:
    """Health once the node is in the replica's snapshot (its refresh may lag a heartbeat)."""
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        assert (await client.post("/heartbeat", json=heartbeat("spare-1"))).status_code == 200
        deadline = asyncio.get_running_loop().time() + 3.0
        while True:
            data = (await client.get("/dashboard/api/health")).json()
            found = [f for f in data["recommendations"]
                     if f["check_id"] == "sample_spare_nodes"]
            seen = data["vitals"]["nodes_total"] == 1
            if (seen and bool(found) == expect) or asyncio.get_running_loop().time() > deadline:
                assert seen
                return found
            await asyncio.sleep(0.05)


@needs_sample
async def test_third_party_check_appears_in_health(settings: Settings, redis_url: str) -> None:
    found = await spare_findings(settings, redis_url, expect=True)
    assert len(found) == 1
    assert found[0]["node_id"] == "spare-1"
    assert found[0]["severity"] == "info"
    assert found[0]["data"] == {"plugin": "herd-sample-check"}


@needs_sample
async def test_third_party_check_disabled_by_environment(
    settings: Settings, redis_url: str,
) -> None:
    disabled = Settings.load(
        environ={"FLEET_DISABLED_PLUGINS": SAMPLE},
        **{name: getattr(settings, name) for name in (
            "redis_url", "redis_prefix", "data_dir", "mdns_enabled", "dashboard_enabled")},
    )
    assert disabled.disabled_plugins == (SAMPLE,)
    assert await spare_findings(disabled, redis_url, expect=False) == []
