"""client_auth on a real Redis: revoking the last key leaves every replica closed, only an
admin opens inference again, and refusals are counted per app."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from services.router.app import create_app
from shared.keys import Keys
from shared.settings import Settings

# The in-process client's address is not loopback: with no admin token it may change nothing.
ADMIN = {"Authorization": "Bearer adm1n"}
CHAT = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}],
        "stream": False}
Client = AsyncTestClient[Any]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until `check` holds, polling; fails if it does not within `seconds`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "not within the bound"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def refused(client: Client, headers: dict[str, str]) -> bool:
    """Both APIs answer 401 in their own shape."""
    ollama = await client.post("/api/chat", json=CHAT, headers=headers)
    openai = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    if ollama.status_code != 401 or openai.status_code != 401:
        return False
    assert isinstance(ollama.json()["error"], str)
    assert openai.json()["error"]["code"] == "invalid_api_key"
    return True


async def served(client: Client) -> bool:
    """Past the door: with no node up the answer is 404 (model not found), not 401."""
    response = await client.post("/api/chat", json=CHAT)
    return response.status_code == 404


async def mode(client: Client) -> str:
    listed = (await client.get("/dashboard/api/settings")).json()["settings"]
    return str(next(s["value"] for s in listed if s["name"] == "client_auth"))


async def test_revoking_the_last_key_leaves_every_replica_closed_until_an_admin_opens(
    settings: Settings, redis_url: str,
) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with (
        AsyncTestClient(create_app(settings, redis_url)) as one,
        AsyncTestClient(create_app(settings, redis_url)) as two,
    ):
        assert await served(one) and await served(two)  # a new fleet is open
        made = await one.post("/dashboard/api/keys", json={"app": "leaky"}, headers=ADMIN)
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        assert await mode(one) == "keys"  # with the key, in the same step
        await within(1.0, lambda: refused(two, {}))

        gone = await one.delete("/dashboard/api/keys/leaky", headers=ADMIN)
        assert gone.status_code == 200, gone.text
        for replica in (one, two):
            # No key, the revoked key, a made-up key: 401 in each API's shape, within 1 s.
            await within(1.0, lambda r=replica: refused(r, bearer(secret)))  # type: ignore[misc]
            assert await refused(replica, {})
            assert await refused(replica, bearer("herd-made-up"))
            assert await mode(replica) == "keys"
            # The admin token still opens inference.
            assert (await replica.post("/api/chat", json=CHAT, headers=ADMIN)).status_code == 404
        listing = (await two.get("/dashboard/api/keys", headers=ADMIN)).json()
        assert listing == {"keys": [], "client_auth": "keys", "inference_open": False}

        opened = await two.post("/dashboard/api/settings", json={"client_auth": "open"},
                                headers=ADMIN)
        assert opened.status_code == 200, opened.text
        assert await served(two)
        await within(1.0, lambda: served(one))
        listing = (await one.get("/dashboard/api/keys", headers=ADMIN)).json()
        assert listing == {"keys": [], "client_auth": "open", "inference_open": True}

        # A key made while open closes the fleet again, on the other replica too.
        made = await two.post("/dashboard/api/keys", json={"app": "fresh"}, headers=ADMIN)
        assert made.status_code == 201, made.text
        await within(1.0, lambda: refused(one, {}))
        assert await mode(one) == "keys" and await mode(two) == "keys"
        fresh = bearer(made.json()["key"])
        ok = await one.post("/api/chat", json=CHAT, headers=fresh)
        assert ok.status_code == 404, ok.text  # the key passes the door


async def test_open_is_refused_while_a_key_exists(
    settings: Settings, redis_url: str, redis: Redis, keys: Keys,
) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        assert (await client.post("/dashboard/api/keys", json={"app": "kept"},
                                  headers=ADMIN)).status_code == 201
        answer = await client.post("/dashboard/api/settings",
                                   json={"client_auth": "open", "auto_pull": True},
                                   headers=ADMIN)
        assert answer.status_code == 409, answer.text
        assert "revoke" in answer.json()["error"] and "1 client key" in answer.json()["error"]
        # Nothing of the change was stored, not even the setting beside it.
        stored = await redis.hgetall(keys.settings())
        assert stored == {"client_auth": json.dumps("keys")}
        assert await mode(client) == "keys"
        # Closing needs no condition, and the CLI's verbs are just this setting.
        closed = await client.post("/dashboard/api/settings", json={"client_auth": "keys"},
                                   headers=ADMIN)
        assert closed.status_code == 200
        bad = await client.post("/dashboard/api/settings", json={"client_auth": "maybe"},
                                headers=ADMIN)
        assert bad.status_code == 400 and "open, keys" in bad.json()["error"]


async def test_keys_older_than_the_setting_keep_the_fleet_closed(
    settings: Settings, redis_url: str, redis: Redis, keys: Keys,
) -> None:
    # A fleet upgraded with keys in Redis and no client_auth stored: it counts as keys.
    record = {"digest": "0" * 64, "requests_per_minute": 0, "tokens_per_minute": 0,
              "created": 1.0}
    await redis.hset(keys.client_keys(), "legacy", json.dumps(record))
    settings = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        assert await redis.hget(keys.settings(), "client_auth") == json.dumps("keys")
        assert await mode(client) == "keys"
        assert await refused(client, {})
        assert (await client.delete("/dashboard/api/keys/legacy",
                                    headers=ADMIN)).status_code == 200
        assert await refused(client, {})


async def test_the_mode_survives_a_replica_restart(settings: Settings, redis_url: str) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        made = await client.post("/dashboard/api/keys", json={"app": "once"}, headers=ADMIN)
        assert made.status_code == 201
        assert (await client.delete("/dashboard/api/keys/once", headers=ADMIN)).status_code == 200
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        assert await refused(client, {})


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and ",".join(sorted(found.group(1).split(","))) == wanted:
            return float(found.group(2))
    return 0.0


async def test_refusals_are_counted_per_app_in_usage_apps_and_metrics(
    settings: Settings, redis_url: str,
) -> None:
    settings = settings.replace(admin_token="adm1n")
    async with AsyncTestClient(create_app(settings, redis_url)) as client:
        before = (await client.get("/metrics")).text
        made = await client.post("/dashboard/api/keys",
                                 json={"app": "counted", "requests_per_minute": 1},
                                 headers=ADMIN)
        key = bearer(made.json()["key"])
        assert (await client.post("/api/chat", json=CHAT, headers=key)).status_code == 404
        # Two 429s (one per API), two 401s (no key, a wrong key).
        assert (await client.post("/api/chat", json=CHAT, headers=key)).status_code == 429
        limited = await client.post("/v1/chat/completions", json=CHAT, headers=key)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert (await client.post("/api/chat", json=CHAT)).status_code == 401
        assert (await client.post("/api/chat", json=CHAT,
                                  headers=bearer("herd-nope"))).status_code == 401

        apps = (await client.get("/dashboard/api/apps")).json()["apps"]
        assert apps["counted"]["rate_limited"] == 2
        assert apps["counted"]["unauthorized"] == 0
        # Each refusal is a rejected request of its app (rejected is part of requests).
        assert apps["counted"]["requests"] >= apps["counted"]["rejected"] >= 2
        assert apps["(none)"]["unauthorized"] == 2 and apps["(none)"]["rejected"] == 2
        usage = (await client.get("/dashboard/api/usage")).json()
        assert (usage["fleet"]["unauthorized"], usage["fleet"]["rate_limited"],
                usage["fleet"]["forbidden"]) == (2, 2, 0)
        assert usage["rejected_before_routing"] == 5
        assert usage["fleet"]["avg_latency_ms"] == 0.0  # refusals have no latency to average

        after = (await client.get("/metrics")).text
        name = "herd_rejected_requests_total"
        for app, code, count in (("counted", "429", 2), ("(none)", "401", 2)):
            delta = _sample(after, name, app=app, code=code) - \
                _sample(before, name, app=app, code=code)
            assert delta == count, (app, code)
        rejected = {"model": "(none)", "node": "none", "status": "rejected"}
        assert _sample(after, "herd_requests_total", **rejected) - \
            _sample(before, "herd_requests_total", **rejected) == 5
