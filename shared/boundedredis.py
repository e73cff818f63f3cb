"""redis-py connections whose replies are bounded: a reply that is late aborts its connection.

A Redis that stops answering without closing its sockets (SIGSTOP, a host that froze, a
network that drops packets) would otherwise hold every caller of redis-py forever: API
handlers, background watchers, the shutdown. redis-py's own bound (`socket_timeout`) cannot
be used: with it, every command is sent through `asyncio.wait_for`, which on Python 3.11
drops a cancellation that arrives just as the send completes (about one cancel in 600
against a frozen Redis, measured), and a replica's shutdown then waits forever on a task
that was never told to stop.

So the bound here involves no cancellation at all. While a reply is awaited, a timer runs;
if it fires, it aborts the connection's transport, the read fails as on any lost connection,
redis-py drops the connection, and the caller gets `redis.exceptions.TimeoutError` (a
RedisError, which the router answers with 503 and its watchers retry on). That covers every
read redis-py makes (commands, pipelines, WATCH and UNWATCH, the handshake of a new
connection) in one place, the connection classes the clients of shared.redisconn use.

After a late reply, the client's connections send nothing for HOLD_S (an `Outage` they
share): commands fail at once instead of each waiting out a timeout of its own. So a caller
that makes several calls in a row (a handler that flushes, then reads) fails within one
reply timeout, not one per call, and a frozen Redis is not asked by every caller in turn.

Not bounded: reads that wait for pub/sub messages (an idle subscription is silent by
design) and reads that carry their own timeout. `XREAD`/`XREADGROUP ... BLOCK ms` get their
block time on top of the reply timeout; other blocking commands (BLPOP and the like) are
not used by Herd, and would be aborted after the reply timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "BOUNDED",
    "HOLD_S",
    "BoundedConnection",
    "BoundedReplies",
    "BoundedSSLConnection",
    "BoundedSentinelConnection",
    "BoundedSentinelSSLConnection",
    "BoundedUnixConnection",
    "Outage",
    "blocking_seconds",
    "bounded_class",
]

_BLOCKING = frozenset({"XREAD", "XREADGROUP"})
HOLD_S = 0.5  # after a late reply, commands fail at once for this long (as shared.fastredis)


def _text(arg: Any) -> str:
    return arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)


def blocking_seconds(args: tuple[Any, ...]) -> float:
    """How long Redis may hold the reply of this command on purpose (its BLOCK), in s."""
    if not args or _text(args[0]).upper() not in _BLOCKING:
        return 0.0
    for index, arg in enumerate(args[:-1]):
        if _text(arg).upper() == "BLOCK":
            try:
                return max(0.0, int(_text(args[index + 1])) / 1000)
            except ValueError:
                return 0.0
    return 0.0


class Outage:
    """What one client's connections know of a Redis that stopped answering."""

    def __init__(self, hold: float = HOLD_S) -> None:
        self.hold = hold
        self._until = 0.0  # time.monotonic() until which nothing is sent
        self._reason = ""

    def late(self, reason: str) -> None:
        self._until = time.monotonic() + self.hold
        self._reason = reason

    def answered(self) -> None:
        self._until = 0.0

    def check(self) -> None:
        """Raise TimeoutError, without asking Redis, while a late reply is that recent."""
        if self._until and time.monotonic() < self._until:
            raise RedisTimeoutError(f"{self._reason} (not asked again for {self.hold:g} s)")


class BoundedReplies(AbstractConnection):  # type: ignore[misc] # redis-py is untyped here
    """The watchdog, mixed in before one of redis-py's connection classes."""

    def __init__(self, *, reply_timeout: float | None = None, outage: Outage | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reply_timeout = reply_timeout
        self.outage = outage or Outage()
        self._blocking = 0.0  # the BLOCK of the command last sent
        self._overdue = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.reply_timeout is not None:
            self.outage.check()
        self._blocking = 0.0  # a pipeline's commands are sent packed, and never block
        await super().send_packed_command(command, check_health)

    async def send_command(self, *args: Any, **kwargs: Any) -> None:
        await super().send_command(*args, **kwargs)
        self._blocking = blocking_seconds(args)

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's own signature
        *,
        disconnect_on_error: bool = True,
        push_request: bool = False,
    ) -> Any:
        limit = self.reply_timeout
        # push_request: a pub/sub read, waiting for messages for as long as it takes
        if limit is None or timeout is not None or push_request:
            return await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request)
        limit += self._blocking
        watchdog = asyncio.get_running_loop().call_later(limit, self._abort, limit)
        try:
            reply = await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
                push_request=push_request)
        except (RedisError, OSError) as exc:
            if self._overdue:
                raise RedisTimeoutError(f"Redis did not answer within {limit:g} s") from exc
            raise
        finally:
            watchdog.cancel()
            self._overdue = False
        self.outage.answered()
        return reply

    def _abort(self, limit: float) -> None:
        writer = self._writer
        if writer is None:
            return
        self._overdue = True
        self.outage.late(f"Redis did not answer within {limit:g} s")
        # The pending read sees the connection lost; redis-py then disconnects it.
        writer.transport.abort()


class BoundedConnection(BoundedReplies, Connection):  # type: ignore[misc]
    """TCP."""


class BoundedSSLConnection(BoundedReplies, SSLConnection):  # type: ignore[misc]
    """TLS."""


class BoundedUnixConnection(BoundedReplies, UnixDomainSocketConnection):  # type: ignore[misc]
    """A unix socket (the embedded Redis)."""


class BoundedSentinelConnection(BoundedReplies, SentinelManagedConnection):  # type: ignore[misc]
    """The master's connection, found through Sentinel."""


class BoundedSentinelSSLConnection(BoundedReplies, SentinelManagedSSLConnection):  # type: ignore[misc]
    """The master's connection over TLS, found through Sentinel."""


# redis-py's class -> its bounded twin
BOUNDED: dict[type[Any], type[Any]] = {
    Connection: BoundedConnection,
    SSLConnection: BoundedSSLConnection,
    UnixDomainSocketConnection: BoundedUnixConnection,
    SentinelManagedConnection: BoundedSentinelConnection,
    SentinelManagedSSLConnection: BoundedSentinelSSLConnection,
}


def bounded_class(connection_class: type[Any]) -> type[Any]:
    """The bounded twin of one of redis-py's connection classes (ValueError for others)."""
    if connection_class in BOUNDED.values():
        return connection_class
    try:
        return BOUNDED[connection_class]
    except KeyError:
        raise ValueError(f"no bounded twin of {connection_class.__name__}") from None
