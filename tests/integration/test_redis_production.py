"""Both Redis clients off the happy path: TLS with a password, Sentinel and its failover,
a replica answering READONLY, a frozen Redis, and the embedded Redis's append-only file."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.fastredis import FastRedis
from shared.redisconn import EmbeddedRedis, RedisUnavailable, check_redis, connect
from tests.redisproc import (
    RedisProc,
    make_tls_files,
    require_system_redis,
    sentinel_group,
    sentinel_url,
)

GUARD = 10.0  # no call here may take this long: a hang fails the test instead of the suite


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[RedisProc]:
    server = RedisProc(tmp_path, "plain").start()
    yield server
    server.stop()


async def test_tls_with_a_password_serves_both_clients(tmp_path: Path) -> None:
    binary = require_system_redis()
    tls = make_tls_files(tmp_path)
    server = RedisProc(tmp_path, "tls", binary=binary, password="pw-herd", tls=tls).start()
    try:
        check_redis(server.url)
        fast = FastRedis(server.url, reply_timeout=2.0)
        client = connect(server.url)
        try:
            assert await asyncio.wait_for(fast.execute("SET", "herd:tls", "yes"), GUARD) == "OK"
            assert await client.get("herd:tls") == "yes"
            pipe = fast.pipeline()
            pipe.xadd("herd:tls-stream", {"a": "1"}, maxlen=10)
            (entry,) = await asyncio.wait_for(pipe.execute(), GUARD)
            assert await client.xlen("herd:tls-stream") == 1 and entry
        finally:
            await fast.close()
            await client.aclose()
        # Plaintext against a TLS port, or a wrong password: refused, with a reason.
        with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
            check_redis(f"redis://:pw-herd@127.0.0.1:{server.port}/0", timeout=1.0)
        wrong = FastRedis(server.url.replace("pw-herd", "nope"), reply_timeout=2.0)
        with pytest.raises(RedisError, match=r"WRONGPASS|invalid"):
            await asyncio.wait_for(wrong.execute("PING"), GUARD)
        await wrong.close()
        untrusted = FastRedis(f"rediss://:pw-herd@127.0.0.1:{server.port}/0", reply_timeout=2.0)
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.wait_for(untrusted.execute("PING"), GUARD)
        await untrusted.close()
    finally:
        server.stop()


async def test_a_replica_answers_readonly_and_the_connection_is_dropped(
    tmp_path: Path, plain_redis: RedisProc
) -> None:
    replica = RedisProc(tmp_path, "replica",
                        extra=["--replicaof", "127.0.0.1", str(plain_redis.port)]).start()
    fast = FastRedis(replica.url)
    try:
        with pytest.raises(ReadOnlyError):
            await asyncio.wait_for(fast.execute("SET", "herd:k", "v"), GUARD)
        # Dropped (so that Sentinel is asked again); the next command connects anew.
        assert await asyncio.wait_for(fast.execute("PING"), GUARD) == "PONG"
        replies = await asyncio.wait_for(fast.execute_many([("SET", "herd:k", "v")]), GUARD)
        assert isinstance(replies[0], ReadOnlyError)
    finally:
        await fast.close()
        replica.stop()


async def test_a_frozen_redis_times_out_and_recovers(plain_redis: RedisProc) -> None:
    fast = FastRedis(plain_redis.url, reply_timeout=0.5, retry_interval=0.5)
    try:
        assert await fast.execute("PING") == "PONG"
        plain_redis.freeze()
        with pytest.raises(RedisTimeoutError, match="did not answer"):
            await asyncio.wait_for(fast.execute("PING"), GUARD)
        # Within retry_interval of the late reply the next command fails at once (a request's
        # cleanup after a timeout does not wait out a second one)...
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="did not answer"):
            await asyncio.wait_for(fast.execute("PING"), GUARD)
        assert time.monotonic() - started < 0.25
        # ...then an attempt to reconnect meets the frozen server, and fails the same way.
        await asyncio.sleep(0.5)
        with pytest.raises(RedisError):
            await asyncio.wait_for(fast.execute("PING"), GUARD)
        plain_redis.thaw()

        async def pong() -> bool:
            while True:
                with contextlib.suppress(RedisError):
                    return bool(await fast.execute("PING") == "PONG")
                await asyncio.sleep(0.1)

        assert await asyncio.wait_for(pong(), GUARD)
    finally:
        plain_redis.thaw()
        await fast.close()


async def test_commands_fail_at_once_while_redis_is_down(plain_redis: RedisProc) -> None:
    fast = FastRedis(plain_redis.url, reply_timeout=2.0, retry_interval=30.0)
    try:
        assert await fast.execute("PING") == "PONG"
        plain_redis.kill()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(fast.execute("PING"), GUARD)
        # Within retry_interval no new attempt is made: every caller gets the error at once.
        results = await asyncio.wait_for(
            asyncio.gather(*(fast.execute("PING") for _ in range(50)), return_exceptions=True),
            GUARD,
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await fast.close()


async def test_sentinel_finds_the_master_and_follows_a_failover(tmp_path: Path) -> None:
    with sentinel_group(tmp_path) as (master, replica, _sentinel):
        url = sentinel_url(_sentinel)
        check_redis(url)
        fast = FastRedis(url, reply_timeout=1.0, retry_interval=0.2)
        client = connect(url, timeout=1.0)
        try:
            assert await fast.execute("SET", "herd:s", "1") == "OK"
            assert fast.master == ("127.0.0.1", master.port)
            assert await client.get("herd:s") == "1"
            master.kill()

            async def write_until_served() -> None:
                while True:
                    with contextlib.suppress(RedisError):
                        await fast.execute("SET", "herd:s", "2")
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(write_until_served(), 20.0)
            assert fast.master == ("127.0.0.1", replica.port)

            async def read_until_served() -> str | None:
                while True:
                    with contextlib.suppress(RedisError):
                        return await client.get("herd:s")  # type: ignore[no-any-return]
                    await asyncio.sleep(0.1)

            assert await asyncio.wait_for(read_until_served(), 20.0) == "2"
        finally:
            await fast.close()
            await client.aclose()


def test_embedded_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    client = sync_redis.Redis.from_url(url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.hset("herd:settings", "max_retries", "5")
        client.xadd("herd:traces", {"id": "r1"})
    finally:
        client.close()
        server.stop()
    url = server.start()
    client = sync_redis.Redis.from_url(url)
    try:
        assert client.hget("herd:settings", "max_retries") == b"5"
        assert client.xlen("herd:traces") == 1
    finally:
        client.close()
        server.stop()
