"""Where a Redis Cluster serves each hash slot: the slot map both Redis clients route by.

It is learned from `CLUSTER SLOTS` (Redis 6.2 has it, Redis 7 and Valkey keep it) and
corrected by each `MOVED` reply in between. A failover shows up as a connection to the old
primary that fails, then as `MOVED` from the nodes that already know the new one: either
marks the map stale, and the next command refreshes it from any node that answers (at most
every `MIN_REFRESH` seconds, so a dead primary does not cause a storm of questions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.crc import key_slot as _crc_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = ["SLOTS", "Address", "SlotMap", "command_slot", "key_slot", "parse_redirect"]

Address = tuple[str, int]
SLOTS = 16384
MIN_REFRESH = 0.1  # seconds between two refreshes of the map

# Commands whose key is not their first argument, or that have none. Herd's request path
# sends EVALSHA, EVAL, XADD, INCRBY and EXPIRE; the rest go through redis-py.
_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_KEYLESS = frozenset({
    "PING", "TIME", "INFO", "ECHO", "AUTH", "HELLO", "SELECT", "CLUSTER", "ASKING", "SCRIPT",
    "PUBLISH", "WAIT", "ROLE", "CLIENT", "CONFIG", "DBSIZE", "COMMAND", "READONLY",
})


def key_slot(key: str | bytes) -> int:
    """The hash slot of `key` (the cluster spec's CRC16 of its hash tag, or of all of it)."""
    slot: int = _crc_slot(key.encode() if isinstance(key, str) else key)
    return slot


def command_slot(args: Sequence[Any]) -> int | None:
    """The slot a command must go to (that of its first key), or None if it has no key."""
    name = str(args[0]).upper()
    if name in _SCRIPT_COMMANDS:
        return key_slot(args[3]) if int(args[2]) > 0 else None
    if name in _KEYLESS or len(args) < 2:
        return None
    return key_slot(args[1])


def parse_redirect(message: str) -> tuple[int, Address]:
    """`MOVED 3999 127.0.0.1:6381` (or ASK) -> (3999, ("127.0.0.1", 6381))."""
    _kind, slot, where = message.split()
    host, _, port = where.rpartition(":")
    return int(slot), (host.strip("[]"), int(port))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SlotMap:
    """The primary of each slot as far as this client knows, and every node it has heard of.

    `refresh` asks the nodes in turn (those that failed last) with the `ask` callable each
    client supplies: its own way of sending `CLUSTER SLOTS` to an address.
    """

    def __init__(self, seeds: Sequence[Address]) -> None:
        self._owners: list[Address | None] = [None] * SLOTS
        # Every node heard of, in the order to ask them (a dict: an ordered set).
        self._nodes: dict[Address, None] = dict.fromkeys(seeds)
        self._failed: dict[Address, float] = {}
        self._lock = asyncio.Lock()
        self._refreshed_at = -1e9
        self.stale = True  # refresh before the next command is routed

    def owner(self, slot: int) -> Address | None:
        return self._owners[slot]

    def nodes(self) -> list[Address]:
        """Every node heard of; those that failed recently last."""
        return sorted(self._nodes, key=lambda a: self._failed.get(a, 0.0))

    def any_primary(self) -> Address | None:
        """A primary for a command with no key: the first that serves a slot."""
        for address in self._owners:
            if address is not None and address not in self._failed:
                return address
        return next(iter(self._nodes), None)

    def moved(self, slot: int, address: Address) -> None:
        """A `MOVED` reply: `slot` is served at `address` now; others may have moved too."""
        self._owners[slot] = address
        self._nodes.setdefault(address, None)
        self.stale = True

    def unreachable(self, address: Address) -> None:
        """A connection to `address` failed: ask the others first, and refresh soon."""
        self._failed[address] = time.monotonic()
        self.stale = True

    def reachable(self, address: Address) -> None:
        self._failed.pop(address, None)

    def load(self, reply: Any, asked: Address) -> None:
        """Replace the map with a `CLUSTER SLOTS` reply obtained from `asked`."""
        if not isinstance(reply, list) or not reply:
            raise RedisConnectionError(f"{asked[0]}:{asked[1]} serves no slot yet")
        owners: list[Address | None] = [None] * SLOTS
        for entry in reply:
            start, end = int(entry[0]), int(entry[1])
            for position, node in enumerate(entry[2:]):
                host = _text(node[0])
                # "" or "?": the node does not know its own address; it is the one asked.
                address = (asked[0] if host in ("", "?") else host, int(node[1]))
                self._nodes.setdefault(address, None)
                if position == 0:
                    owners[start:end + 1] = [address] * (end - start + 1)
        self._owners = owners
        self.stale = False

    async def refresh(self, ask: Callable[[Address], Awaitable[Any]], *,
                      force: bool = False) -> None:
        """Reload the map from the first node that answers (one refresh at a time)."""
        async with self._lock:
            if not force and time.monotonic() - self._refreshed_at < MIN_REFRESH:
                return  # another caller has just done it
            self._refreshed_at = time.monotonic()
            problems: list[str] = []
            for address in self.nodes():
                try:
                    reply = await ask(address)
                    self.load(reply, address)
                except (RedisError, OSError, TimeoutError) as exc:
                    self.unreachable(address)
                    problems.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                self.reachable(address)
                return
            raise RedisConnectionError("no Redis Cluster node answered: " + "; ".join(problems))
