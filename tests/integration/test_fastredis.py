"""The request path's lean Redis connection, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.fastcluster import fast_redis
from shared.fastredis import FastRedis
from shared.keys import Keys
from shared.scripts import Scripts, script_sha


@pytest.fixture
async def fast(redis_url: str, prefix: str) -> FastRedis:
    client = fast_redis(redis_url, key_prefix=prefix)  # with REDIS_URL=redis+cluster://...
    yield client  # type: ignore[misc]
    await client.close()


async def test_replies_match_their_commands_under_concurrency(
    fast: FastRedis, redis: Redis, keys: Keys
) -> None:
    key = keys.leader()
    replies = await asyncio.gather(*(fast.execute("INCR", key) for _ in range(200)))
    assert sorted(replies) == list(range(1, 201))
    assert await redis.get(key) == "200"
    assert await fast.execute("SET", key + "s", "héllo") == "OK"
    assert await fast.execute("GET", key + "s") == "héllo"


async def test_pipeline_is_one_round_trip_with_redis_py_signatures(
    fast: FastRedis, redis: Redis, keys: Keys
) -> None:
    pipe = fast.pipeline()
    pipe.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, keys.leader(), 5)
    pipe.xadd(keys.events(), {"kind": "test", "data": b"{}"}, maxlen=100, approximate=True)
    assert len(pipe) == 2
    incremented, entry_id = await pipe.execute()
    assert incremented == 5
    entries = await redis.xrange(keys.events())
    assert [(i, f) for i, f in entries] == [(entry_id, {"kind": "test", "data": "{}"})]


async def test_errors_are_redis_py_exceptions(fast: FastRedis, keys: Keys) -> None:
    await fast.execute("SET", keys.leader(), "text")
    with pytest.raises(ResponseError, match="not an integer"):
        await fast.execute("INCR", keys.leader())
    pipe = fast.pipeline()
    pipe.eval("return redis.call('INCR', KEYS[1])", 1, keys.leader())
    with pytest.raises(ResponseError):
        await pipe.execute()
    # the connection is still in step after errors
    assert await fast.execute("PING") == "PONG"


async def test_scripts_fall_back_to_eval_after_a_flush(
    fast: FastRedis, redis: Redis, keys: Keys
) -> None:
    scripts = Scripts(redis, fast)
    await redis.script_flush()
    assert not (await redis.script_exists(script_sha("ping")))[0]
    assert await scripts.run("ping", [keys.leader()], ["one"]) == "one"
    assert (await redis.script_exists(script_sha("ping")))[0]  # EVAL cached it
    assert await scripts.run("ping", [keys.leader()], ["two"]) == "two"


async def test_pipeline_evalsha_runs_a_lost_script_as_eval(
    fast: FastRedis, redis: Redis, keys: Keys
) -> None:
    # A script Redis has never seen (the unique comment): the first EVALSHA meets NOSCRIPT.
    script = f"-- {keys.prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    assert not (await redis.script_exists(sha))[0]
    for expected in (3, 6):
        pipe = fast.pipeline()
        pipe.evalsha(sha, script, 1, keys.leader(), 3)
        pipe.xadd(keys.events(), {"kind": "test"}, maxlen=100)
        total, entry_id = await pipe.execute()
        assert total == expected and entry_id  # the XADD ran once, the script once
        assert (await redis.script_exists(sha))[0]  # EVAL cached it: EVALSHA next time
    assert await redis.xlen(keys.events()) == 2


async def test_reconnects_after_the_server_drops_it(fast: FastRedis, redis: Redis) -> None:
    client_id = await fast.execute("CLIENT", "ID")
    assert await redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    # The next call may meet the dead socket once; the one after that reconnects.
    with contextlib.suppress(RedisConnectionError):
        await fast.execute("PING")
    assert await fast.execute("PING") == "PONG"


async def test_unreachable_server_is_a_connection_error() -> None:
    client = FastRedis("redis://127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await client.execute("PING")
