"""Every URL form gets connections whose replies are bounded, and blocking reads their block."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.boundedredis import (
    BoundedConnection,
    BoundedSentinelConnection,
    BoundedSentinelSSLConnection,
    BoundedSSLConnection,
    BoundedUnixConnection,
    Outage,
    blocking_seconds,
)
from shared.redisconn import connect


@pytest.mark.parametrize(("url", "kind"), [
    ("redis://127.0.0.1:6379/0", BoundedConnection),
    ("rediss://:pw@127.0.0.1:6380/0", BoundedSSLConnection),
    ("unix:///tmp/herd-test.sock?db=0", BoundedUnixConnection),
    ("redis+sentinel://127.0.0.1:26379/mymaster/0", BoundedSentinelConnection),
    ("rediss+sentinel://127.0.0.1:26379/mymaster/0", BoundedSentinelSSLConnection),
])
def test_every_url_form_gets_bounded_connections(url: str, kind: type) -> None:
    async def build() -> None:
        client = connect(url, timeout=1.5)
        pool = client.connection_pool
        assert pool.connection_class is kind
        assert pool.connection_kwargs["reply_timeout"] == 1.5
        assert isinstance(pool.connection_kwargs["outage"], Outage)
        assert pool.connection_kwargs.get("socket_timeout") is None
        await client.aclose()

    asyncio.run(build())


@pytest.mark.parametrize(("args", "seconds"), [
    (("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 1000, "STREAMS", "s", ">"), 1.0),
    ((b"XREAD", b"BLOCK", b"250", b"STREAMS", b"s", b"$"), 0.25),
    (("XREAD", "STREAMS", "s", "$"), 0.0),
    (("SET", "BLOCK", "5"), 0.0),  # a key named BLOCK is not a block
    (("XREAD", "BLOCK"), 0.0),
    (("XREAD", "BLOCK", "soon", "STREAMS", "s", "$"), 0.0),
    ((), 0.0),
])
def test_only_a_streams_block_is_waited_for(args: tuple[object, ...], seconds: float) -> None:
    assert blocking_seconds(args) == seconds


def test_an_outage_refuses_for_its_hold_then_asks_again() -> None:
    outage = Outage(hold=60.0)
    outage.check()
    outage.late("Redis did not answer within 2 s")
    with pytest.raises(RedisTimeoutError, match="did not answer within 2 s"):
        outage.check()
    outage.answered()  # a reply on another connection: Redis is back
    outage.check()
    quick = Outage(hold=0.0)
    quick.late("late")
    quick.check()
