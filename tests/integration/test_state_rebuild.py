"""A replica whose Redis comes back empty: 503s in the API's shape, never 404 or 500, while
the registry is rebuilt, and its runtime settings written back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from litestar.testing import AsyncTestClient

from services.router.app import create_app
from shared.keys import Keys
from shared.settings import Settings
from tests.helpers import free_port
from tests.redisproc import RedisProc

EXAMPLE = Path(__file__).parent.parent / "data" / "herd-heartbeat-example.json"
CHAT = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}],
        "stream": False}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A Redis of this test's own: it is killed and started again empty."""
    server = RedisProc(tmp_path, "redis").start()
    yield server
    server.stop()


async def _poll(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_redis_back_empty_is_rebuilt_not_404(
    own_redis: RedisProc, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)  # its own single Redis, whatever REDIS_URL is
    replica = settings.replace(redis_url=own_redis.url, heartbeat_timeout=30.0,
                               redis_timeout=1.0, admin_token="adm1n")
    heartbeat = json.loads(EXAMPLE.read_text())
    heartbeat["ollama_host"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: a 502
    async with AsyncTestClient(create_app(replica, own_redis.url)) as client:
        assert (await client.post("/heartbeat", json=heartbeat)).status_code == 200
        changed = await client.post("/dashboard/api/settings", json={"max_retries": 5},
                                    headers={"Authorization": "Bearer adm1n"})
        assert changed.status_code == 200

        own_redis.kill()
        down = await client.post("/api/chat", json=CHAT)
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"] == "2"
        assert "Redis" in down.json()["error"]
        openai = await client.post("/v1/chat/completions", json=CHAT)
        assert openai.status_code == 503
        assert openai.json()["error"]["code"] == "state_unavailable"
        status = await client.get("/fleet/status")
        assert status.status_code == 503 and "unreachable" in status.json()["error"]
        assert (await client.get("/healthz")).status_code == 503

        own_redis.start()  # empty

        async def rebuilding() -> bool:
            answer = await client.post("/api/chat", json=CHAT)
            assert answer.status_code in (503, 502), answer.text  # never 404 or 500
            return answer.status_code == 503 and "rebuilt" in answer.json()["error"]

        assert await _poll(rebuilding), "no 'being rebuilt' answer after Redis came back"
        # The replica wrote its runtime settings back into the empty Redis.
        fresh = sync_redis.Redis.from_url(own_redis.url, decode_responses=True)
        try:
            assert fresh.hget(keys.settings(), "max_retries") == "5"
        finally:
            fresh.close()
        # The node's next heartbeat ends the rebuild: an unknown model is a 404 again.
        assert (await client.post("/heartbeat", json=heartbeat)).status_code == 200
        unknown = await client.post("/api/chat", json={**CHAT, "model": "no-such:1b"})
        assert unknown.status_code == 404
        listed = (await client.get("/dashboard/api/settings")).json()["settings"]
        assert next(s["value"] for s in listed if s["name"] == "max_retries") == 5
