"""Client keys on a real Redis: the local view, revocation across replicas, limits, last use."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from services.router.app import create_app
from services.router.context import RouterContext
from services.router.fleet.client_keys import ClientKeys, KeyRecord
from shared.errors import RateLimited, Unauthorized
from shared.keys import Keys
from shared.settings import Settings

ADMIN = {"Authorization": "Bearer adm1n"}


def view(client: AsyncTestClient[Any]) -> ClientKeys:
    ctx: RouterContext = client.app.state.herd
    return ctx.client_keys


async def test_a_revoked_key_is_refused_by_the_other_replica_within_a_second(
    settings: Settings, redis_url: str,
) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with (
        AsyncTestClient(create_app(settings, redis_url)) as one,
        AsyncTestClient(create_app(settings, redis_url)) as two,
    ):
        kept = await one.post("/dashboard/api/keys", json={"app": "keeper"}, headers=ADMIN)
        assert kept.status_code == 201, kept.text
        made = await one.post("/dashboard/api/keys", json={"app": "chatbot"}, headers=ADMIN)
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        bearer = f"Bearer {secret}"
        assert view(one).authenticate(bearer) is not None  # the replica that made it: at once
        for _ in range(200):
            if len(view(two).by_digest) == 2:
                break
            await asyncio.sleep(0.01)
        record = view(two).authenticate(bearer)
        assert record is not None and record.app == "chatbot"
        started = time.monotonic()
        gone = await one.delete("/dashboard/api/keys/chatbot", headers=ADMIN)
        assert gone.json() == {"app": "chatbot", "revoked": True}
        while len(view(two).by_digest) > 1 and time.monotonic() - started < 1.0:
            await asyncio.sleep(0.01)
        with pytest.raises(Unauthorized):
            view(two).authenticate(bearer)
        assert time.monotonic() - started < 1.0


async def test_credentials_once_a_key_exists(ctx: RouterContext) -> None:
    keys = ctx.client_keys
    assert keys.authenticate("") is None  # open: no key, no client token
    secret, record = await keys.create("app1", requests_per_minute=5)
    assert keys.authenticate(f"Bearer {secret}") == record
    assert keys.authenticate(f"bearer   {secret} ") == record
    for wrong in ("", "Bearer", f"Basic {secret}", f"Bearer {secret}x", "Bearer \u00e9"):
        with pytest.raises(Unauthorized):
            keys.authenticate(wrong)
    ctx.settings = ctx.settings.replace(admin_token="adm", client_token="cli")
    assert keys.authenticate("Bearer adm") is None
    assert keys.authenticate("Bearer cli") is None


async def test_only_the_digest_is_stored(ctx: RouterContext, redis: Redis, keys: Keys) -> None:
    secret, record = await ctx.client_keys.create("stored")
    raw = await redis.hget(keys.client_keys(), "stored")
    assert raw is not None and record.digest in raw and secret not in raw
    listed = await ctx.client_keys.listing()
    assert [k.app for k in listed] == ["stored"] and listed[0].last_used is None
    await redis.hset(keys.client_keys(), "broken", "{not json")  # an older or damaged record
    assert set(r.app for r in (await ctx.client_keys.load()).values()) == {"stored"}


async def test_request_limit_per_minute_fleet_wide(ctx: RouterContext, settings: Settings,
                                                   redis: Redis) -> None:
    other = RouterContext.create(settings, redis).client_keys  # a second replica's view
    record = KeyRecord(app="busy", digest="d", requests_per_minute=3)
    now = 1_800_000_000.0 + 50  # 10 s before a minute ends
    await ctx.client_keys.admit(record, now)
    await other.admit(record, now)
    await ctx.client_keys.admit(record, now)
    with pytest.raises(RateLimited) as over:
        await other.admit(record, now + 1)
    assert over.value.status_code == 429
    assert over.value.headers == {"Retry-After": "9"}
    assert "3 requests per minute" in over.value.message
    await other.admit(record, now + 11)  # the next minute starts afresh


async def test_tokens_count_when_requests_end(ctx: RouterContext) -> None:
    keys = ctx.client_keys
    record = KeyRecord(app="wordy", digest="d", tokens_per_minute=100)
    now = 1_800_000_000.0
    await keys.admit(record, now)
    pipe = ctx.redis.pipeline(transaction=False)
    keys.add_usage(pipe, record, 60, now)
    keys.add_usage(pipe, KeyRecord(app="free", digest="e"), 10_000, now)  # no limit: no cost
    assert len(pipe) == 2
    await pipe.execute()
    await keys.admit(record, now + 1)  # 60 < 100: still in
    pipe = ctx.redis.pipeline(transaction=False)
    keys.add_usage(pipe, record, 40, now + 2)
    await pipe.execute()
    with pytest.raises(RateLimited, match="100 tokens per minute"):
        await keys.admit(record, now + 3)


async def test_last_use_is_written_in_batches(ctx: RouterContext) -> None:
    secret, _ = await ctx.client_keys.create("seen")
    before = time.time()
    ctx.client_keys.authenticate(f"Bearer {secret}")
    await ctx.client_keys.flush_used()
    stored = await ctx.client_keys.listing()
    assert stored[0].last_used is not None and stored[0].last_used >= before - 1
