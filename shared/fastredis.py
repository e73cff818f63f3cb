"""A lean Redis connection for the request path: commands multiplexed on one socket.

redis-py 7 spends 100-150 µs of CPU per command here (connection-pool locking, health checks
and observability hooks on every call); writing RESP with `hiredis.pack_command` on one
pipelined connection and matching replies to waiters in order costs about 20 µs
(BENCHMARKS.md). Only the per-request calls use it (slot acquire, release + trace);
everything else keeps the ordinary redis-py client. Errors are redis-py's exception classes,
so callers catch `RedisError` either way.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["FastPipeline", "FastRedis"]

Arg = str | bytes | int | float

# hiredis's stub types the argument as a 1-tuple; it takes a command of any length.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class _Protocol(asyncio.Protocol):
    """One connection: replies arrive in the order commands were written."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"Redis connection lost: {exc or 'closed'}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)

    def send(self, payload: bytes, count: int) -> list[asyncio.Future[Any]]:
        if self.lost is not None or self.transport is None:
            raise RedisConnectionError("Redis connection lost")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self.waiters.extend(futures)
        # Commands of every request in this turn of the loop go out in one write: one
        # system call instead of one per request when many run at once.
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(payload)
        return futures

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(unsent))


def _check(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        message = str(reply)
        if message.startswith("NOSCRIPT"):
            raise NoScriptError(message)
        raise ResponseError(message)
    return reply


class FastRedis:
    """Connects on first use and again after a failure; `close()` when the replica stops."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._options = parse_url(url)
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._lock:  # one reconnect for every waiting caller
            if self._protocol is None or self._protocol.lost is not None:
                self._protocol = await asyncio.wait_for(self._open(), self._connect_timeout)
            return self._protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            if "path" in options:
                _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
            else:
                _, protocol = await loop.create_connection(
                    _Protocol, options.get("host", "localhost"), int(options.get("port", 6379))
                )
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        setup: list[Sequence[Arg]] = []
        if options.get("password"):
            user = options.get("username")
            setup.append(("AUTH", user, options["password"]) if user else
                         ("AUTH", options["password"]))
        if int(options.get("db", 0) or 0):
            setup.append(("SELECT", int(options["db"])))
        if setup:
            payload = b"".join(_pack(tuple(c)) for c in setup)
            for reply in await asyncio.gather(*protocol.send(payload, len(setup))):
                _check(reply)
        return protocol

    async def execute(self, *args: Arg) -> Any:
        """One command; its reply (str for bulk strings), or a redis-py exception."""
        protocol = await self._connection()
        (future,) = protocol.send(_pack(args), 1)
        return _check(await future)

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; replies in order. Errors are returned, not raised."""
        protocol = await self._connection()
        payload = b"".join(_pack(tuple(c)) for c in commands)
        replies = await asyncio.gather(*protocol.send(payload, len(commands)))
        return [ResponseError(str(r)) if isinstance(r, hiredis.ReplyError) else r
                for r in replies]

    def pipeline(self) -> FastPipeline:
        return FastPipeline(self)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


class FastPipeline:
    """The few pipeline methods the request path uses, with redis-py's signatures."""

    def __init__(self, client: FastRedis) -> None:
        self._client = client
        self._commands: list[tuple[Arg, ...]] = []

    def eval(self, script: str, numkeys: int, *keys_and_args: Arg) -> None:
        self._commands.append(("EVAL", script, numkeys, *keys_and_args))

    def xadd(
        self,
        name: str,
        fields: Mapping[str, Arg],
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> None:
        command: list[Arg] = ["XADD", name]
        if maxlen is not None:
            command += ["MAXLEN", "~" if approximate else "=", maxlen]
        command.append("*")
        for key, value in fields.items():
            command += [key, value]
        self._commands.append(tuple(command))

    def incrby(self, name: str, amount: int = 1) -> None:
        self._commands.append(("INCRBY", name, amount))

    def expire(self, name: str, time: int) -> None:
        self._commands.append(("EXPIRE", name, time))

    def __len__(self) -> int:
        return len(self._commands)

    async def execute(self) -> list[Any]:
        """Run every queued command in one round trip; raise the first error, as redis-py."""
        commands, self._commands = self._commands, []
        if not commands:
            return []
        replies = await self._client.execute_many(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies
