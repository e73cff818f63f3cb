"""The slot map both cluster clients route by: which key a command has, redirections, and a
CLUSTER SLOTS reply read into primaries; and a prefix that cannot be a hash tag refused."""

from __future__ import annotations

import pytest
from redis.crc import key_slot as redis_py_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from services.router.server import serve
from shared.clusterslots import SlotMap, command_slot, key_slot, parse_redirect
from shared.settings import Settings, SettingsError


def test_a_command_goes_to_its_first_keys_slot() -> None:
    assert command_slot(("XADD", "{herd}:traces", "*", "t", "x")) == redis_py_slot(b"herd")
    assert command_slot(("EVALSHA", "abc", 2, "{herd}:a", "{herd}:b", "arg")) == key_slot("herd")
    assert command_slot(("EVAL", "return 1", 0, "arg")) is None  # no key: any primary
    assert command_slot(("PING",)) is None
    assert command_slot(("SCRIPT", "LOAD", "return 1")) is None
    assert command_slot(("PUBLISH", "{herd}:ch:release", "m")) is None  # reaches every node


def test_redirections_name_the_slot_and_its_node() -> None:
    assert parse_redirect("MOVED 3999 127.0.0.1:6381") == (3999, ("127.0.0.1", 6381))
    assert parse_redirect("ASK 12 10.0.0.7:7002") == (12, ("10.0.0.7", 7002))
    assert parse_redirect("MOVED 1 [::1]:7000") == (1, ("::1", 7000))


def _reply(host: str = "127.0.0.1") -> list[object]:
    # Redis 7's shape: [start, end, [host, port, id, {}], [replica...], ...]
    return [
        [0, 5460, [host, 7000, "a", {}], [host, 7003, "d", {}]],
        [5461, 10922, [host, 7001, "b", {}], [host, 7004, "e", {}]],
        [10923, 16383, [b"127.0.0.1", 7002, b"c"], ["127.0.0.1", 7005, "f"]],
    ]


def test_a_slots_reply_gives_each_slot_its_primary() -> None:
    slots = SlotMap([("seed", 6379)])
    assert slots.stale and slots.owner(0) is None
    slots.load(_reply(), ("127.0.0.1", 7000))
    assert not slots.stale
    assert slots.owner(0) == slots.owner(5460) == ("127.0.0.1", 7000)
    assert slots.owner(5461) == ("127.0.0.1", 7001)
    assert slots.owner(16383) == ("127.0.0.1", 7002)
    assert ("127.0.0.1", 7005) in slots.nodes()  # replicas are asked too, later
    slots.moved(16383, ("127.0.0.1", 7005))  # a failover: the replica took over
    assert slots.owner(16383) == ("127.0.0.1", 7005) and slots.stale


def test_a_node_that_does_not_know_its_address_is_the_one_asked() -> None:
    slots = SlotMap([])
    slots.load(_reply(host=""), ("10.1.2.3", 7000))
    assert slots.owner(0) == ("10.1.2.3", 7000)


def test_failed_nodes_are_asked_last() -> None:
    slots = SlotMap([("a", 1), ("b", 2), ("c", 3)])
    slots.unreachable(("a", 1))
    assert slots.nodes()[-1] == ("a", 1)
    slots.reachable(("a", 1))
    assert slots.nodes()[0] == ("a", 1)


async def test_refresh_asks_until_a_node_answers() -> None:
    asked: list[tuple[str, int]] = []

    async def ask(address: tuple[str, int]) -> object:
        asked.append(address)
        if address[0] == "down":
            raise ConnectionRefusedError("refused")
        return _reply()

    slots = SlotMap([("down", 1), ("up", 2)])
    await slots.refresh(ask)
    assert asked == [("down", 1), ("up", 2)] and slots.owner(0) == ("127.0.0.1", 7000)
    await slots.refresh(ask)  # just refreshed: not asked again so soon
    assert len(asked) == 2
    with pytest.raises(RedisConnectionError, match="no Redis Cluster node answered"):
        await SlotMap([("down", 1)]).refresh(ask)


def test_herd_refuses_an_empty_prefix_on_a_cluster_before_starting() -> None:
    settings = Settings.load(environ={}, redis_url="redis+cluster://127.0.0.1:1/",
                             redis_prefix=":")
    with pytest.raises(SettingsError, match="must not be empty on a Redis Cluster"):
        serve(settings)
