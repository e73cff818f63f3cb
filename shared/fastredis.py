"""A lean Redis connection for the request path: commands multiplexed on one socket.

redis-py 7 spends 100-150 µs of CPU per command here (connection-pool locking, health checks
and observability hooks on every call); writing RESP with `hiredis.pack_command` on one
pipelined connection and matching replies to waiters in order costs about 20 µs
(BENCHMARKS.md). Only the per-request calls use it (slot acquire, release + trace);
everything else keeps the ordinary redis-py client. Errors are redis-py's exception classes,
so callers catch `RedisError` either way.

It follows the same URL as redis-py (shared.redisurl): TLS with the same SSL options, and
with Sentinel it asks for the master on every (re)connection, so a failover is followed by
itself: a lost connection or a `READONLY` reply (a demoted master) drops the connection and
the next command finds the new master. Replies are bounded by `reply_timeout`: one watchdog
timer per connection, armed only while commands are outstanding, aborts the connection when
no reply has arrived for that long (replies come in order, so every later command on it is
stuck too). After a failed connection attempt or a late reply, commands fail at once for
`retry_interval` instead of each waiting out its own attempt against a Redis that is down
or frozen (a request's cleanup after a late reply then does not wait a second time).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redisurl import RedisTarget, parse_redis_url, ssl_context

__all__ = ["FastPipeline", "FastRedis", "reply_error"]

Arg = str | bytes | int | float

# hiredis's stub types the argument as a 1-tuple; it takes a command of any length.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)

# Keepalive probes find a peer that vanished while the connection was idle (a Redis host
# that lost power sends no FIN): after 10 s idle, every 5 s, dropped after 3 unanswered.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


def set_keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive on a connected socket (a no-op on unix sockets)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def reply_error(message: str) -> RedisError:
    """redis-py's class for an error reply: LOADING, READONLY and NOSCRIPT kept apart.

    LOADING (BusyLoadingError) is a ConnectionError in redis-py: Redis is up but not
    serving yet, which callers treat like Redis being away; so are a cluster that is down
    (CLUSTERDOWN: no primary for a slot, mid-failover) and a replica cut off from its
    primary (MASTERDOWN).
    """
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    if message.startswith("CLUSTERDOWN"):
        return ClusterDownError(message)
    if message.startswith("MASTERDOWN"):
        return MasterDownError(message)
    if message.startswith("TRYAGAIN"):
        return TryAgainError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    """One connection: replies arrive in the order commands were written."""

    def __init__(self, reply_timeout: float,
                 on_late: Callable[[RedisError], None] | None = None) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self._unsent: list[bytes] = []
        self._reply_timeout = reply_timeout
        self._on_late = on_late
        self._loop = asyncio.get_running_loop()
        self._progress = 0.0  # loop time of the last reply, or of going busy
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_keepalive(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._progress = self._loop.time()
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        """Mark the connection dead: every waiting command gets `error`."""
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, payload: bytes, count: int) -> list[asyncio.Future[Any]]:
        if self.lost is not None or self.transport is None:
            raise RedisConnectionError("Redis connection lost")
        loop = self._loop
        futures = [loop.create_future() for _ in range(count)]
        if not self.waiters:
            self._progress = loop.time()
            if self._watchdog is None:
                self._watchdog = loop.call_at(self._progress + self._reply_timeout,
                                              self._watch)
        self.waiters.extend(futures)
        # Commands of every request in this turn of the loop go out in one write: one
        # system call instead of one per request when many run at once.
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(payload)
        return futures

    def _watch(self) -> None:
        self._watchdog = None
        if not self.waiters or self.lost is not None:
            return
        deadline = self._progress + self._reply_timeout
        if self._loop.time() >= deadline:
            error = RedisTimeoutError(f"Redis did not answer within {self._reply_timeout:g} s")
            self.fail(error)
            if self._on_late is not None:
                self._on_late(error)
        else:  # replies arrived since: wait for the rest from the last one
            self._watchdog = self._loop.call_at(deadline, self._watch)

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(unsent))


class FastRedis:
    """Connects on first use and again after a failure; `close()` when the replica stops.

    `url` is any form shared.redisurl accepts. `reply_timeout` bounds each reply and each
    connection attempt (with Sentinel: each question to a Sentinel, and the master's
    connection). A cluster URL needs its subclass (shared.fastcluster.fast_redis).
    """

    serves_cluster = False

    def __init__(
        self, url: str | RedisTarget, *, reply_timeout: float = 2.0,
        retry_interval: float = 0.5,
    ) -> None:
        self._target = url if isinstance(url, RedisTarget) else parse_redis_url(url)
        if self._target.is_cluster and not self.serves_cluster:
            raise ValueError("a redis+cluster:// URL needs shared.fastcluster.FastCluster")
        self._reply_timeout = reply_timeout
        self._retry_interval = retry_interval
        self._ssl = ssl_context(self._target.tls) if self._target.tls is not None else None
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._failed_at = -1e9
        self._failure: RedisError | None = None
        self.master: tuple[str, int] | None = None  # the address in use (Sentinel's answer)

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._lock:  # one reconnect for every waiting caller
            protocol = self._protocol
            if protocol is not None and protocol.lost is None:
                return protocol
            failure = self._failure
            if failure is not None and time.monotonic() - self._failed_at < self._retry_interval:
                raise type(failure)(str(failure))
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a
                # cancellation that arrives as the connection completes.
                async with asyncio.timeout(self._reply_timeout):
                    self._protocol = await self._open()
            except (RedisError, TimeoutError) as exc:
                error = exc if isinstance(exc, RedisError) else RedisTimeoutError(
                    f"no connection to Redis within {self._reply_timeout:g} s")
                self._failure, self._failed_at = error, time.monotonic()
                raise error from exc
            self._failure = None
            return self._protocol

    async def _open(self) -> _Protocol:
        target = self._target
        if target.is_sentinel:
            host, port = await self._ask_sentinels()
        else:
            host, port = target.host, target.port
        protocol = await self._handshake(host, port, target.path)
        self.master = (host, port)
        return protocol

    async def _handshake(self, host: str, port: int, path: str = "") -> _Protocol:
        """A new connection to `host:port` (or `path`), authenticated and on the database."""
        target = self._target
        protocol = await self._dial(host, port, path)
        setup: list[Sequence[Arg]] = []
        if target.password:
            setup.append(("AUTH", target.username, target.password) if target.username
                         else ("AUTH", target.password))
        if target.db:
            setup.append(("SELECT", target.db))
        if target.is_sentinel:
            setup.append(("ROLE",))  # a Sentinel may still name a demoted master
        try:
            if setup:
                payload = b"".join(_pack(tuple(c)) for c in setup)
                replies = await asyncio.gather(*protocol.send(payload, len(setup)))
                for reply in replies:
                    if isinstance(reply, hiredis.ReplyError):
                        text = str(reply)
                        if text.startswith(("WRONGPASS", "NOAUTH", "ERR invalid password")):
                            raise AuthenticationError(text)
                        raise reply_error(text)
                if target.is_sentinel and replies[-1][0] != "master":
                    raise ReadOnlyError(f"{host}:{port} is a {replies[-1][0]}, not the master")
        except BaseException:
            protocol.fail(RedisConnectionError("Redis connection setup failed"))
            raise
        return protocol

    async def _dial(self, host: str, port: int, path: str = "") -> _Protocol:
        loop = asyncio.get_running_loop()
        timeout = self._reply_timeout

        def factory() -> _Protocol:
            return _Protocol(timeout, self._late)

        try:
            if path:
                _, protocol = await loop.create_unix_connection(factory, path)
            elif self._ssl is not None:
                _, protocol = await loop.create_connection(
                    factory, host, port, ssl=self._ssl, server_hostname=host)
            else:
                _, protocol = await loop.create_connection(factory, host, port)
        except (OSError, ssl.SSLError) as exc:
            where = path or f"{host}:{port}"
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        return protocol

    def _late(self, error: RedisError) -> None:
        """A reply was late: the connection is gone, and the next attempts wait a while."""
        self._failure, self._failed_at = error, time.monotonic()

    async def _ask_sentinels(self) -> tuple[str, int]:
        """The master's address from the first Sentinel that knows it."""
        target = self._target
        problems: list[str] = []
        for host, port in target.sentinels:
            try:
                protocol = await self._dial(host, port)
            except RedisConnectionError as exc:
                problems.append(str(exc))
                continue
            try:
                commands: list[tuple[Arg, ...]] = []
                if target.sentinel_password:
                    commands.append(("AUTH", target.sentinel_username, target.sentinel_password)
                                    if target.sentinel_username
                                    else ("AUTH", target.sentinel_password))
                commands.append(("SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.service_name))
                payload = b"".join(_pack(c) for c in commands)
                replies = await asyncio.gather(*protocol.send(payload, len(commands)))
            except RedisError as exc:
                problems.append(f"sentinel {host}:{port}: {exc}")
                continue
            finally:
                protocol.fail(RedisConnectionError("closed"))
            answer = replies[-1]
            if isinstance(answer, list) and len(answer) == 2:
                return str(answer[0]), int(answer[1])
            problems.append(f"sentinel {host}:{port}: no master named "
                            f"{target.service_name!r} ({answer})")
        raise RedisConnectionError("no Sentinel named the master: " + "; ".join(problems))

    def _dropped(self, protocol: _Protocol, error: RedisError) -> RedisError:
        # A demoted master answers writes with READONLY: drop the connection so the next
        # command asks Sentinel again (and LOADING: reconnect once Redis has loaded).
        if isinstance(error, ReadOnlyError | BusyLoadingError):
            protocol.fail(RedisConnectionError(str(error)))
        return error

    async def execute(self, *args: Arg) -> Any:
        """One command; its reply (str for bulk strings), or a redis-py exception."""
        protocol = await self._connection()
        (future,) = protocol.send(_pack(args), 1)
        reply = await future
        if isinstance(reply, hiredis.ReplyError):
            raise self._dropped(protocol, reply_error(str(reply)))
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; replies in order. Errors are returned, not raised."""
        protocol = await self._connection()
        payload = b"".join(_pack(tuple(c)) for c in commands)
        replies = await asyncio.gather(*protocol.send(payload, len(commands)))
        return [self._dropped(protocol, reply_error(str(r)))
                if isinstance(r, hiredis.ReplyError) else r for r in replies]

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
        self._scripts: dict[int, str] = {}  # index of an EVALSHA -> its script, for NOSCRIPT

    def eval(self, script: str, numkeys: int, *keys_and_args: Arg) -> None:
        self._commands.append(("EVAL", script, numkeys, *keys_and_args))

    def evalsha(self, sha: str, script: str, numkeys: int, *keys_and_args: Arg) -> None:
        """EVALSHA `sha` (the SHA1 of `script`): only 40 bytes of script on the wire and
        none for Redis to hash. If Redis lost it (a restart, SCRIPT FLUSH), that command
        alone runs again as EVAL, in a second round trip."""
        self._scripts[len(self._commands)] = script
        self._commands.append(("EVALSHA", sha, numkeys, *keys_and_args))

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
        scripts, self._scripts = self._scripts, {}
        if not commands:
            return []
        replies = await self._client.execute_many(commands)
        again = [i for i, script in scripts.items() if isinstance(replies[i], NoScriptError)]
        if again:
            retried = await self._client.execute_many(
                [("EVAL", scripts[i], *commands[i][2:]) for i in again])
            for i, reply in zip(again, retried, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies
