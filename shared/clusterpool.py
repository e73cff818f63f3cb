"""redis-py on a Redis Cluster: a pool of connections to the primary of Herd's hash slot.

Every key of a deployment carries one hash tag (shared.keys), so one primary holds them all,
and a plain redis-py client connected to it runs what Herd sends unchanged: MULTI/EXEC with
a PUBLISH inside, WATCH, TIME in a pipeline, SCAN (which then sees every Herd key) and
pub/sub (a PUBLISH reaches every node of a cluster, so a subscriber on any node hears it).
redis-py's own RedisCluster refuses PUBLISH and TIME in pipelines and has no asyncio pub/sub,
which is why it is not used here; the request path's FastCluster routes by key itself.

The pool knows the slot from the key prefix it is given (else it learns it from the first
MOVED reply, which names the slot and its primary) and connects to its primary; after a
failover, a failed connection, a MOVED or a CLUSTERDOWN sends it to the new primary
(shared.clusterslots asks the cluster again). What is re-sent:
- a command answered MOVED, ASK, TRYAGAIN or CLUSTERDOWN did not run: it is sent again (a
  few times, with a short backoff), on a new connection;
- a connection that could not be made sent nothing: the same;
- a connection lost after sending leaves the outcome unknown: a read-only command is sent
  once more, anything else raises ConnectionError to its caller.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands import READ_COMMANDS
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.boundedredis import BoundedReplies, Outage
from shared.clusterslots import Address, SlotMap, key_slot
from shared.keys import hash_tagged
from shared.redisurl import RedisTarget

__all__ = ["ClusterSlotRedis", "Redirected", "Unreached", "cluster_client"]


class Redirected(RedisConnectionError):
    """The node did not run the command (MOVED, ASK, TRYAGAIN, CLUSTERDOWN): send it again."""


class Unreached(RedisConnectionError):
    """No connection to the slot's primary could be made: nothing was sent."""


class _AtOnceThenBackoff(ExponentialWithJitterBackoff):
    """The first retry at once (a MOVED names the right node), then exponential, jittered."""

    def compute(self, failures: int) -> float:
        return 0.0 if failures <= 1 else float(super().compute(failures - 1))


# A few quick tries, then the caller hears of it: a failover takes the cluster's node
# timeout plus an election, and every caller already retries on its own schedule.
_BACKOFF = _AtOnceThenBackoff(cap=0.5, base=0.05)
_CONNECT_RETRY = Retry(_BACKOFF, 4, supported_errors=(Unreached,))
_COMMAND_RETRY = Retry(_BACKOFF, 4, supported_errors=(Redirected,))


class SlotOwner:
    """Which node the pool's connections go to: the primary of the learned slot."""

    def __init__(self, target: RedisTarget, probe: dict[str, Any], slot: int | None) -> None:
        self.map = SlotMap(target.cluster_nodes)
        self.slot = slot  # None: learned from the first MOVED
        self._probe = probe
        self._tls = target.tls is not None

    async def address(self) -> Address:
        if self.map.stale:
            # On failure, connect to what is known; failing that is Unreached.
            with contextlib.suppress(RedisError):
                await self.map.refresh(self._ask)
        owner = self.map.owner(self.slot) if self.slot is not None else self.map.any_primary()
        if owner is None:
            raise Unreached("no Redis Cluster node serves Herd's slot (yet)")
        return owner

    def moved(self, slot: int, address: Address) -> None:
        self.slot = slot
        self.map.moved(slot, address)

    async def _ask(self, address: Address) -> Any:
        """CLUSTER SLOTS on a connection of its own, closed at once."""
        kind = SSLConnection if self._tls else Connection
        connection = kind(host=address[0], port=address[1], **self._probe)
        try:
            await connection.connect()
            await connection.send_command("CLUSTER", "SLOTS")
            return await connection.read_response()
        finally:
            await connection.disconnect()


class SlotConnection(Connection):
    """A connection that finds the slot's primary each time it (re)connects."""

    def __init__(self, *, slot_owner: SlotOwner, **kwargs: Any) -> None:
        self.slot_owner = slot_owner
        super().__init__(**kwargs)

    async def connect(self) -> None:
        # Connecting has its own retry: the command's (self.retry) re-sends only what a
        # node refused to run, never a command lost in flight.
        await _CONNECT_RETRY.call_with_retry(
            lambda: self.connect_check_health(check_health=True, retry_socket_connect=False),
            lambda _error: self.disconnect())

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        owner = self.slot_owner
        self.host, self.port = await owner.address()
        try:
            await super().connect_check_health(check_health, retry_socket_connect)
        except (AuthenticationError, AuthorizationError):
            raise  # not a matter of which node: retrying would not help
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            owner.map.unreachable((self.host, self.port))
            raise Unreached(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        owner.map.reachable((self.host, self.port))

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except MovedError as exc:
            self.slot_owner.moved(exc.slot_id, (exc.host, int(exc.port)))
            await self.disconnect()
            raise Redirected(str(exc)) from exc
        except (AskError, TryAgainError, ClusterDownError) as exc:
            # A slot being migrated, or no primary for it yet (a failover under way).
            self.slot_owner.map.stale = True
            await self.disconnect()
            raise Redirected(str(exc)) from exc


class SlotSSLConnection(SlotConnection, SSLConnection):
    """The same over TLS (`rediss+cluster://`)."""


class BoundedSlotConnection(BoundedReplies, SlotConnection):
    """A slot connection whose replies are bounded (shared.boundedredis)."""


class BoundedSlotSSLConnection(BoundedReplies, SlotSSLConnection):
    """The same over TLS."""


class ClusterSlotRedis(Redis):
    """redis-py's client on the pool; a read-only command lost in flight is sent once more."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)
        except (Redirected, Unreached):
            raise  # already retried
        except (RedisConnectionError, RedisTimeoutError):
            if str(args[0]).upper() not in READ_COMMANDS:
                raise  # may have run: its caller decides
            return await super().execute_command(*args, **options)


def cluster_client(target: RedisTarget, kwargs: dict[str, Any], *, max_connections: int,
                   key_prefix: str = "", reply_timeout: float | None = None,
                   ) -> ClusterSlotRedis:
    """The async client for a `redis+cluster://` target; `kwargs` are the connections'.

    `key_prefix` is Herd's (as configured: the hash tag is made of it here too);
    `reply_timeout` bounds each reply as shared.boundedredis does.
    """
    slot = key_slot(hash_tagged(key_prefix)) if key_prefix else None
    # A cluster has only db 0; TLS is the connection class's, its ssl_* options as they are.
    kwargs = {k: v for k, v in kwargs.items() if k not in ("db", "ssl")}
    probe = {**kwargs, "retry": Retry(NoBackoff(), 0),
             "socket_timeout": kwargs.get("socket_connect_timeout")}
    pool = BlockingConnectionPool(
        connection_class=BoundedSlotSSLConnection if target.tls is not None
        else BoundedSlotConnection, reply_timeout=reply_timeout, outage=Outage(),
        max_connections=max_connections, timeout=10, retry=_COMMAND_RETRY,
        slot_owner=SlotOwner(target, probe, slot), decode_responses=True, health_check_interval=30,
        **kwargs,
    )
    client: ClusterSlotRedis = ClusterSlotRedis.from_pool(pool)
    return client
