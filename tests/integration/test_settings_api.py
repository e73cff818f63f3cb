"""Runtime settings: listing, validation, admin token, and propagation across two replicas."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from services.router.app import create_app
from services.router.context import RouterContext
from shared.keys import Keys
from shared.settings import RUNTIME_FIELDS, Settings

# The in-process client's address is not loopback: with no admin token it may change nothing.
ADMIN = {"Authorization": "Bearer adm1n"}


def replica_settings(client: AsyncTestClient[Any]) -> Settings:
    ctx: RouterContext = client.app.state.herd
    return ctx.settings


async def test_listing_has_every_runtime_setting(settings: Settings, redis_url: str) -> None:
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        response = await client.get("/dashboard/api/settings")
    assert response.status_code == 200
    listed = {s["name"]: s for s in response.json()["settings"]}
    assert set(listed) == RUNTIME_FIELDS
    auto_pull = listed["auto_pull"]
    assert (auto_pull["value"], auto_pull["default"], auto_pull["type"]) == (False, False, "bool")
    assert "Pull" in auto_pull["help"]
    assert listed["context_protection"]["choices"] == ["strip", "warn", "passthrough"]
    assert "redis_url" not in listed


async def test_change_reaches_the_other_replica_within_a_second(
    settings: Settings, redis_url: str, redis: Redis, keys: Keys,
) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with (
        AsyncTestClient(create_app(settings, redis_url)) as one,
        AsyncTestClient(create_app(settings, redis_url)) as two,
    ):
        started = time.monotonic()
        response = await one.post(
            "/dashboard/api/settings",
            json={"auto_pull": True, "max_retries": 5, "context_protection": "warn"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        assert response.json()["updated"] == {
            "auto_pull": True, "max_retries": 5, "context_protection": "warn"}
        assert replica_settings(one).max_retries == 5  # the replica that took the POST: now
        while replica_settings(two).max_retries != 5 and time.monotonic() - started < 1.0:
            await asyncio.sleep(0.01)
        other = replica_settings(two)
        assert (other.max_retries, other.auto_pull, other.context_protection) == (5, True, "warn")
        assert time.monotonic() - started < 1.0
        listed = {s["name"]: s["value"] for s in (await two.get(
            "/dashboard/api/settings")).json()["settings"]}
        assert listed["max_retries"] == 5
    stored = await redis.hgetall(keys.settings())
    assert json.loads(stored["max_retries"]) == 5
    # A replica started later begins with the stored overrides.
    async with AsyncTestClient(create_app(settings, redis_url)) as three:
        assert replica_settings(three).auto_pull is True


async def test_bad_input_is_a_400_naming_the_key(settings: Settings, redis_url: str) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        client.headers.update(ADMIN)
        cases = [
            ({"nonsense": 1}, "nonsense"),
            ({"max_retries": "many"}, "max_retries"),
            ({"auto_pull": "perhaps"}, "auto_pull"),
            ({"context_protection": "drop"}, "context_protection"),
            ({"redis_url": "redis://x"}, "redis_url"),
            ([1, 2], "JSON object"),
        ]
        for body, named in cases:
            response = await client.post("/dashboard/api/settings", json=body)
            assert response.status_code == 400, (body, response.text)
            assert named in response.json()["error"]
        response = await client.post("/dashboard/api/settings", content=b"{not json")
        assert response.status_code == 400
        assert "JSON" in response.json()["error"]
        assert replica_settings(client).max_retries == settings.max_retries


async def test_admin_token_required_when_set(settings: Settings, redis_url: str) -> None:
    locked = settings.replace(admin_token="s3cret")
    async with AsyncTestClient(create_app(locked, redis_url)) as client:
        response = await client.post("/dashboard/api/settings", json={"auto_pull": True})
        assert response.status_code == 401
        assert "Bearer" in response.json()["error"]
        wrong = await client.post("/dashboard/api/settings", json={"auto_pull": True},
                                  headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.post("/dashboard/api/settings", json={"auto_pull": True},
                                  headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert replica_settings(client).auto_pull is True


async def test_without_admin_token_only_loopback_may_change(
    settings: Settings, redis_url: str,
) -> None:
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        response = await client.post("/dashboard/api/settings", json={"auto_pull": True})
        assert response.status_code == 403
        assert "FLEET_ADMIN_TOKEN" in response.json()["error"]
        assert replica_settings(client).auto_pull is False
        assert (await client.get("/dashboard/api/settings")).status_code == 200  # reads: open
