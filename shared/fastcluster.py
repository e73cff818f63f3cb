"""The lean request-path connection on a Redis Cluster: one socket per node, each command
sent to the primary that serves its key's slot.

Herd's keys share one hash tag (shared.keys), so in practice every command goes to one
primary; the routing is general all the same. Redirections are followed: `MOVED` corrects
the slot map and re-sends the command to the node it names, `ASK` (a slot being migrated)
sends `ASKING` and the command to the importing node, `TRYAGAIN` (a multi-key command
during a migration) waits briefly and re-sends. Those replies mean the command did not run,
so re-sending is always safe.

A connection that cannot be made means nothing was sent either: the slot map is refreshed
and, if the slot has a new primary, the commands go there. A connection lost after sending
is different: the command may or may not have run (and, with asynchronous replication, may
or may not survive a failover), so it is not re-sent here; the caller gets the
ConnectionError and decides (the request path answers 503, or keeps a request's end to
write again: its trace is recorded once by request id, its release is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis
from redis.exceptions import ClusterDownError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.clusterslots import Address, SlotMap, command_slot, key_slot, parse_redirect
from shared.fastredis import Arg, FastRedis, _pack, _Protocol, reply_error
from shared.keys import hash_tagged
from shared.redisurl import RedisTarget, parse_redis_url

__all__ = ["FastCluster", "fast_redis"]

MAX_REDIRECTS = 5  # rounds of MOVED / ASK / TRYAGAIN / re-routing before giving up
TRYAGAIN_PAUSE = 0.05  # seconds: a migrating slot's keys usually settle within this


def fast_redis(url: str | RedisTarget, *, reply_timeout: float = 2.0,
               key_prefix: str = "") -> FastRedis:
    """The lean connection for any URL form: FastCluster for a cluster, else FastRedis."""
    target = url if isinstance(url, RedisTarget) else parse_redis_url(url)
    if target.is_cluster:
        return FastCluster(target, reply_timeout=reply_timeout, key_prefix=key_prefix)
    return FastRedis(target, reply_timeout=reply_timeout)


class _Unsent(Exception):
    """No connection to the node: its commands were not sent (a wrapper, never raised)."""

    def __init__(self, error: RedisError) -> None:
        super().__init__(str(error))
        self.error = error


class FastCluster(FastRedis):
    """FastRedis for `redis+cluster://` URLs; same methods, same errors.

    A command with no key (SCRIPT LOAD, CLIENT ID) goes to the primary of `key_prefix`'s
    hash slot (FLEET_REDIS_PREFIX, whose keys all share it), else to where the last keyed
    command went.
    """

    serves_cluster = True

    def __init__(self, url: str | RedisTarget, *, reply_timeout: float = 2.0,
                 retry_interval: float = 0.5, key_prefix: str = "") -> None:
        super().__init__(url, reply_timeout=reply_timeout, retry_interval=retry_interval)
        self._home_slot = key_slot(hash_tagged(key_prefix)) if key_prefix else None
        self.slot_map = SlotMap(self._target.cluster_nodes)
        self._nodes: dict[Address, _Protocol] = {}
        self._locks: dict[Address, asyncio.Lock] = {}
        self._node_failures: dict[Address, tuple[float, RedisError]] = {}

    # --- connections, one per node ------------------------------------------------------

    async def _node(self, address: Address) -> _Protocol:
        protocol = self._nodes.get(address)
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._locks.setdefault(address, asyncio.Lock()):
            protocol = self._nodes.get(address)
            if protocol is not None and protocol.lost is None:
                return protocol
            failure = self._node_failures.get(address)
            if failure is not None and time.monotonic() - failure[0] < self._retry_interval:
                raise type(failure[1])(str(failure[1]))  # fail at once, as FastRedis does
            try:
                protocol = await asyncio.wait_for(self._handshake(*address),
                                                  self._reply_timeout)
            except (RedisError, TimeoutError) as exc:
                error = exc if isinstance(exc, RedisError) else RedisTimeoutError(
                    f"no connection to {address[0]}:{address[1]} within "
                    f"{self._reply_timeout:g} s")
                self._node_failures[address] = (time.monotonic(), error)
                self.slot_map.unreachable(address)
                raise error from exc
            self._node_failures.pop(address, None)
            self.slot_map.reachable(address)
            self._nodes[address] = protocol
            return protocol

    async def _ask_slots(self, address: Address) -> Any:
        protocol = await self._node(address)
        (future,) = protocol.send(_pack(("CLUSTER", "SLOTS")), 1)
        reply = await asyncio.wait_for(future, self._reply_timeout)
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(str(reply))
        return reply

    async def _refresh(self, *, force: bool = False) -> None:
        await self.slot_map.refresh(self._ask_slots, force=force)

    async def _route(self, slot: int | None) -> Address:
        if self.slot_map.stale:
            # On failure, route by what is known: the send says whether that still works.
            with contextlib.suppress(RedisError):
                await self._refresh()
        address = self._where(slot)
        if address is None:
            await self._refresh(force=True)
            address = self._where(slot)
        if address is None:
            raise ClusterDownError(f"CLUSTERDOWN no node serves hash slot {slot}")
        return address

    def _where(self, slot: int | None) -> Address | None:
        if slot is not None:
            return self.slot_map.owner(slot)
        if self._home_slot is not None:
            return self.slot_map.owner(self._home_slot)
        home = self.master
        if home is not None and home not in self._node_failures:
            return home
        return self.slot_map.any_primary()

    async def _send(self, address: Address, commands: Sequence[Sequence[Arg]],
                    asking: bool) -> list[Any] | _Unsent:
        try:
            protocol = await self._node(address)
        except RedisError as exc:
            return _Unsent(exc)
        if asking:  # ASKING lets the next command (only) use the slot being imported
            payload = b"".join(_pack(("ASKING",)) + _pack(tuple(c)) for c in commands)
        else:
            payload = b"".join(_pack(tuple(c)) for c in commands)
        count = len(commands) * (2 if asking else 1)
        try:
            replies = await asyncio.gather(*protocol.send(payload, count))
            return replies[1::2] if asking else replies
        except RedisError:
            self.slot_map.stale = True  # the node may have failed over: ask next time
            raise

    # --- commands -----------------------------------------------------------------------

    def _ready(self, slots: Sequence[int | None]) -> tuple[Address, _Protocol] | None:
        """The one open connection every command goes to, if the map is current: the usual
        case, sent without the general path's grouping (its cost showed in the benchmark)."""
        if self.slot_map.stale:
            return None
        first = slots[0]
        address = self._where(first)
        if address is None:
            return None
        for slot in slots:
            if slot != first and self._where(slot) != address:
                return None
        protocol = self._nodes.get(address)
        if protocol is None or protocol.lost is not None:
            return None
        return address, protocol

    async def execute(self, *args: Arg) -> Any:
        slot = command_slot(args)
        ready = self._ready((slot,))
        if ready is not None:  # one command, one future: no gather (as FastRedis.execute)
            address, protocol = ready
            (future,) = protocol.send(_pack(args), 1)
            try:
                reply = await future
            except RedisError:
                self.slot_map.stale = True
                raise
            if not isinstance(reply, hiredis.ReplyError):
                if slot is not None:
                    self.master = address
                return reply
            asking: dict[int, Address] = {}
            replies: list[Any] = [None]
            pending, pause = self._settle(address, (0,), (reply,), replies, asking)
            if pending:
                if pause:
                    await asyncio.sleep(TRYAGAIN_PAUSE)
                await self._routed((args,), (slot,), replies, pending, asking)
            (reply,) = replies
        else:
            (reply,) = await self.execute_many([args])
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands, each to its slot's primary; replies in order. Error replies are
        returned, connection errors raised (as FastRedis)."""
        slots = [command_slot(c) for c in commands]
        replies: list[Any] = [None] * len(commands)
        asking: dict[int, Address] = {}
        ready = self._ready(slots)
        if ready is None:
            return await self._routed(commands, slots, replies, list(range(len(commands))),
                                      asking)
        address, protocol = ready
        payload = b"".join(_pack(tuple(c)) for c in commands)
        try:
            results = await asyncio.gather(*protocol.send(payload, len(commands)))
        except RedisError:
            self.slot_map.stale = True  # the node may have failed over: ask next time
            raise
        if slots[0] is not None:
            self.master = address
        for reply in results:
            if isinstance(reply, hiredis.ReplyError):
                break
        else:
            return results  # no error reply: nothing to settle
        pending, pause = self._settle(address, range(len(commands)), results, replies, asking)
        if not pending:
            return replies
        if pause:
            await asyncio.sleep(TRYAGAIN_PAUSE)
        return await self._routed(commands, slots, replies, pending, asking)

    def _settle(self, address: Address, indexes: Iterable[int], results: Sequence[Any],
                replies: list[Any], asking: dict[int, Address]) -> tuple[list[int], bool]:
        """Fill `replies` from one node's `results`; return the commands redirected (they
        did not run) and whether one was TRYAGAIN."""
        pending: list[int] = []
        pause = False
        for i, reply in zip(indexes, results, strict=True):
            if not isinstance(reply, hiredis.ReplyError):
                replies[i] = reply
                continue
            text = str(reply)
            if text.startswith("MOVED "):
                slot, moved_to = parse_redirect(text)
                self.slot_map.moved(slot, moved_to)
                pending.append(i)
            elif text.startswith("ASK "):
                asking[i] = parse_redirect(text)[1]
                pending.append(i)
            elif text.startswith("TRYAGAIN"):
                pending.append(i)
                pause = True
            else:
                replies[i] = self._reply_error(address, text)
        return pending, pause

    async def _routed(self, commands: Sequence[Sequence[Arg]], slots: Sequence[int | None],
                      replies: list[Any], pending: list[int],
                      asking: dict[int, Address]) -> list[Any]:
        """Send the `pending` commands, each to its node, following redirections."""
        unsent: RedisError | None = None
        for _ in range(MAX_REDIRECTS):
            groups: dict[tuple[Address, bool], list[int]] = {}
            for i in pending:
                if i in asking:
                    where = (asking.pop(i), True)
                else:
                    where = (await self._route(slots[i]), False)
                    if slots[i] is not None:
                        self.master = where[0]  # where keyless commands go too
                groups.setdefault(where, []).append(i)
            results = list(await asyncio.gather(
                *(self._send(where[0], [commands[i] for i in indexes], where[1])
                  for where, indexes in groups.items()), return_exceptions=True))
            pending, pause = [], False
            for (where, indexes), result in zip(groups.items(), results, strict=True):
                if isinstance(result, _Unsent):
                    unsent = result.error
                    pending += indexes  # not sent: route again once the map is refreshed
                elif isinstance(result, BaseException):
                    raise result
                else:
                    redirected, again = self._settle(where[0], indexes, result, replies,
                                                     asking)
                    pending += redirected
                    pause = pause or again
            if not pending:
                return replies
            if unsent is not None:
                keyed = [s for s in (slots[i] for i in pending) if s is not None]
                before = [self.slot_map.owner(s) for s in keyed]
                await self._refresh(force=True)
                if [self.slot_map.owner(s) for s in keyed] == before:
                    raise unsent  # the primary is still the one that cannot be reached
                unsent = None
            if pause:
                await asyncio.sleep(TRYAGAIN_PAUSE)
        raise RedisConnectionError(f"Redis Cluster kept redirecting after {MAX_REDIRECTS} "
                                   "tries (a slot migration or failover under way)")

    def _reply_error(self, address: Address, text: str) -> RedisError:
        protocol = self._nodes.get(address)
        error = reply_error(text)
        return self._dropped(protocol, error) if protocol is not None else error

    async def close(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for protocol in nodes.values():
            if protocol.transport is not None:
                protocol.transport.close()
