"""Herd on a real Redis Cluster, in-process: the URL forms, one hash slot for every key, the
commands Herd sends running unchanged, and both clients following Herd's slot when it moves.

(The failover of a primary under load is the e2e drill, tests/e2e/test_redis_cluster_drill.py;
`REDIS_URL=redis+cluster://host:port/ pytest tests/integration` runs every integration test
on a cluster.)
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError

from shared.clusterslots import key_slot
from shared.fastcluster import FastCluster, fast_redis
from shared.keys import Keys
from shared.redisconn import REDIS_UNAVAILABLE, RedisUnavailable, check_redis, connect
from tests.helpers import free_port
from tests.redisproc import (
    ClusterGroup,
    RedisProc,
    make_tls_files,
    redis_cluster,
    require_cluster_tools,
)

pytestmark = pytest.mark.timeout(120)

PASSWORD = "cluster-pw"
GUARD = 10.0  # no call here may take this long: a hang fails the test, not the suite


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    """Three primaries, no replicas (failover is the e2e drill's), with a password."""
    require_cluster_tools()
    with redis_cluster(tmp_path_factory.mktemp("cluster"), replicas=0,
                       password=PASSWORD) as group:
        yield group


@pytest.fixture
def herd_prefix() -> str:
    return f"herdcl:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def clients(cluster: ClusterGroup, herd_prefix: str) -> AsyncIterator[
        tuple[Redis, FastCluster]]:
    url = cluster.url()
    redis = connect(url, key_prefix=herd_prefix)
    fast = fast_redis(url, key_prefix=herd_prefix)
    assert isinstance(fast, FastCluster)
    yield redis, fast
    await fast.close()
    await redis.aclose()


def _every_key(keys: Keys) -> list[str]:
    """One key (or channel) of every family shared.keys builds, new families included."""
    built: list[str] = []
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or isinstance(method.__self__, type):
            continue
        count = len(inspect.signature(method).parameters)
        key = method(*(["gpu-1", "qwen3:8b"][:count] if count <= 2 else ["x"] * count))
        built += key if isinstance(key, list) else [key]
    return built


def _node_client(node: RedisProc) -> sync_redis.Redis:
    return sync_redis.Redis(host="127.0.0.1", port=node.port, password=PASSWORD,
                            decode_responses=True, socket_timeout=5)


def test_every_key_of_a_deployment_is_in_one_slot(cluster: ClusterGroup) -> None:
    keys = Keys.for_redis("herd:", cluster=True)
    assert keys.prefix == "{herd}:"
    built = _every_key(keys)
    assert len(built) > 30 and all(k.startswith("{herd}:") for k in built)
    client = _node_client(cluster.nodes[0])
    try:
        slots = {int(client.execute_command("CLUSTER", "KEYSLOT", k)) for k in built}
    finally:
        client.close()
    assert slots == {key_slot("herd")} == {key_slot(k) for k in built}
    # A single Redis keeps the prefix as it was: existing deployments are unchanged.
    assert Keys.for_redis("herd:", cluster=False).settings() == "herd:settings"


async def test_cluster_url_forms_and_the_wrong_ones(cluster: ClusterGroup,
                                                    tmp_path: Path) -> None:
    node = cluster.nodes[1]
    # The first listed node is down: the others are asked; user:password is the ACL form.
    url = f"redis+cluster://default:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{node.port}/"
    check_redis(url)
    redis = connect(url, key_prefix="forms:")
    fast = fast_redis(url, key_prefix="forms:")
    try:
        key = Keys.for_redis("forms:", cluster=True).settings()
        assert await asyncio.wait_for(fast.execute("HSET", key, "a", "1"), GUARD) == 1
        assert await asyncio.wait_for(redis.hget(key, "a"), GUARD) == "1"
        assert await redis.delete(key) == 1
    finally:
        await fast.close()
        await redis.aclose()

    wrong = f"redis+cluster://:nope@127.0.0.1:{node.port}/"
    with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
        check_redis(wrong)
    refused = connect(wrong)
    try:
        with pytest.raises(AuthenticationError):
            await asyncio.wait_for(refused.ping(), GUARD)
    finally:
        await refused.aclose()
    with pytest.raises(RedisUnavailable, match=r"is a Redis Cluster node: use redis\+cluster"):
        check_redis(f"redis://:{PASSWORD}@127.0.0.1:{node.port}/0")
    single = RedisProc(tmp_path, "single", binary=cluster.server).start()
    try:
        with pytest.raises(RedisUnavailable, match="not a Redis Cluster node"):
            check_redis(f"redis+cluster://127.0.0.1:{single.port}/")
    finally:
        single.stop()


async def test_herds_commands_run_unchanged(cluster: ClusterGroup, herd_prefix: str,
                                            clients: tuple[Redis, FastCluster]) -> None:
    redis, fast = clients
    keys = Keys.for_redis(herd_prefix, cluster=True)
    # A subscriber on a node that does not hold Herd's slot: a PUBLISH reaches every node.
    owner = cluster.owner(keys.settings())
    other = next(n for n in cluster.nodes if n is not owner)
    listener = _node_client(other).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.settings_channel())
    try:
        # MULTI with a PUBLISH inside (runtime settings), WATCH (the registry), TIME in a
        # pipeline, EVAL publishing from Lua (the queue's scripts), SCAN.
        pipe = redis.pipeline(transaction=True)
        pipe.hset(keys.settings(), mapping={"max_retries": "4"})
        pipe.publish(keys.settings_channel(), "max_retries")
        assert await asyncio.wait_for(pipe.execute(), GUARD) == [1, 0]
        async with redis.pipeline(transaction=True) as watched:
            await watched.watch(keys.node("n1"))
            assert await watched.exists(keys.node("n1")) == 0
            watched.multi()
            watched.hset(keys.node("n1"), "state", "{}")
            watched.sadd(keys.nodes(), "n1")
            assert await watched.execute() == [1, 1]
        pipe = redis.pipeline(transaction=False)
        pipe.smembers(keys.nodes())
        pipe.time()
        members, (seconds, _micro) = await pipe.execute()
        assert members == {"n1"} and seconds > 0
        script = "redis.call('PUBLISH', ARGV[1], 'lua'); return redis.call('INCR', KEYS[1])"
        assert await fast.execute("EVAL", script, 1, keys.leader(),
                                  keys.settings_channel()) == 1
        found = sorted([k async for k in redis.scan_iter(match=keys.match())])
        assert found == sorted([keys.settings(), keys.node("n1"), keys.nodes(), keys.leader()])
        heard = []
        for _ in range(50):
            message = listener.get_message(timeout=0.1)
            if message:
                heard.append(message["data"])
            if len(heard) == 2:
                break
        assert heard == ["max_retries", "lua"]
    finally:
        listener.close()


def _setslot(node: RedisProc, *args: object) -> None:
    client = _node_client(node)
    try:
        client.execute_command("CLUSTER", "SETSLOT", *args)
    finally:
        client.close()


def _node_id(node: RedisProc) -> str:
    client = _node_client(node)
    try:
        return str(client.execute_command("CLUSTER", "MYID"))
    finally:
        client.close()


def _migrate(source: RedisProc, target: RedisProc, key: str) -> None:
    client = _node_client(source)
    try:
        client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                               "AUTH", PASSWORD, "KEYS", key)
    finally:
        client.close()


async def test_both_clients_follow_the_slot_when_it_moves(
        cluster: ClusterGroup, herd_prefix: str,
        clients: tuple[Redis, FastCluster]) -> None:
    """A reshard moves Herd's slot to another primary: ASK while it moves (FastCluster
    follows it; a script over keys on both sides is TRYAGAIN, retried then refused as
    unavailable), then MOVED (both clients follow and stay there)."""
    redis, fast = clients
    keys = Keys.for_redis(herd_prefix, cluster=True)
    moved_key, staying_key = keys.leader(), keys.epoch()
    assert await fast.execute("SET", moved_key, "m") == "OK"
    assert await redis.set(staying_key, "s")
    slot = key_slot(moved_key)
    source = cluster.owner(moved_key)
    target = next(n for n in cluster.nodes if n is not source)
    source_id, target_id = _node_id(source), _node_id(target)
    _setslot(target, slot, "IMPORTING", source_id)
    _setslot(source, slot, "MIGRATING", target_id)
    _migrate(source, target, moved_key)

    # Halfway: each key is served where it is now.
    assert await asyncio.wait_for(fast.execute("GET", moved_key), GUARD) == "m"  # ASK
    assert await asyncio.wait_for(fast.execute("GET", staying_key), GUARD) == "s"
    both = "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"
    with pytest.raises(REDIS_UNAVAILABLE):  # TRYAGAIN until the keys are together
        await asyncio.wait_for(fast.execute("EVAL", both, 2, moved_key, staying_key), GUARD)
    with pytest.raises(REDIS_UNAVAILABLE):  # redis-py's pool waits for the move to end
        await asyncio.wait_for(redis.get(moved_key), GUARD)
    assert await asyncio.wait_for(redis.get(staying_key), GUARD) == "s"

    _migrate(source, target, staying_key)
    for node in cluster.nodes:
        _setslot(node, slot, "NODE", target_id)
    assert await asyncio.wait_for(
        fast.execute("EVAL", both, 2, moved_key, staying_key), GUARD) == ["m", "s"]
    assert fast.master == ("127.0.0.1", target.port)
    assert fast.slot_map.owner(slot) == ("127.0.0.1", target.port)
    assert await asyncio.wait_for(redis.mget(moved_key, staying_key), GUARD) == ["m", "s"]
    assert (await redis.client_info())["laddr"]  # keyless: on the slot's new primary too
    client_port = int((await redis.execute_command("CONFIG", "GET", "port"))[1])
    assert client_port == target.port


async def test_tls_cluster_serves_both_clients(tmp_path: Path) -> None:
    require_cluster_tools()
    tls = make_tls_files(tmp_path)
    with redis_cluster(tmp_path / "tls", replicas=0, tls=tls) as group:
        url = group.url()
        assert url.startswith("rediss+cluster://")
        check_redis(url)
        redis = connect(url, key_prefix="tls:")
        fast = fast_redis(url, key_prefix="tls:")
        try:
            key = Keys.for_redis("tls:", cluster=True).leader()
            assert await asyncio.wait_for(fast.execute("INCR", key), GUARD) == 1
            assert await asyncio.wait_for(redis.incr(key), GUARD) == 2
        except RedisError as exc:  # pragma: no cover - the message says what failed
            raise AssertionError(f"TLS cluster: {exc}") from exc
        finally:
            await fast.close()
            await redis.aclose()
