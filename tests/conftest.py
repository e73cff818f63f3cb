"""Fixtures shared by every test: a clean Redis namespace per test, and a place for data."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.cluster import ClusterNode, RedisCluster

from services.router.context import RouterContext
from shared.keys import Keys
from shared.redisconn import EmbeddedRedis, connect
from shared.redisurl import parse_redis_url
from shared.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the folder it lives in (unit, integration, e2e)."""
    for item in items:
        for kind in ("unit", "integration", "e2e"):
            if f"{os.sep}{kind}{os.sep}" in str(item.path):
                item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL / FLEET_REDIS_URL when set (tests use their own key prefix), else embedded."""
    url = os.environ.get("FLEET_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


def _sync_client(redis_url: str) -> sync_redis.Redis | RedisCluster:
    target = parse_redis_url(redis_url)
    if target.is_cluster:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.cluster_nodes],
                            username=target.username, password=target.password)
    return sync_redis.Redis.from_url(redis_url)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    value = f"herdtest:{uuid.uuid4().hex[:10]}:"
    yield value
    client = _sync_client(redis_url)
    try:
        match = Keys.for_redis(value, cluster=isinstance(client, RedisCluster)).match()
        batch = list(client.scan_iter(match=match, count=500))
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def keys(prefix: str, redis_url: str) -> Keys:
    """The test's keys; on a Redis Cluster (REDIS_URL=redis+cluster://...) hash-tagged."""
    return Keys.for_redis(prefix, cluster=parse_redis_url(redis_url).is_cluster)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(redis_url: str, prefix: str, data_dir: Path) -> Settings:
    return Settings.load(
        environ={},
        redis_url=redis_url,
        redis_prefix=prefix,
        data_dir=str(data_dir),
        mdns_enabled=False,
        dashboard_enabled=False,
    )


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, key_prefix=prefix)
    yield client
    await client.aclose()


@pytest.fixture
def ctx(settings: Settings, redis: Redis) -> RouterContext:
    """A router context on the test's own event loop (an app's runs in its client's thread)."""
    return RouterContext.create(settings, redis)
