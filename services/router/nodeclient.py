"""The HTTP/1.1 client every call to a node goes over: keep-alive connections per node.

aiohttp's client costs ~435 µs of CPU per small request on this kind of machine; writing
the request in one buffer and parsing the answer with httptools (the parser uvicorn uses)
costs ~100 µs (BENCHMARKS.md). The node's body arrives de-chunked, as the bytes it sent;
`readany()` hands them on as they come, with back-pressure when the client reads slowly.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterable
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

__all__ = ["NodeBroken", "NodeClient", "NodeResponse"]

HIGH_WATER = 1 << 20  # buffered body bytes before the node's socket is paused
LOW_WATER = 1 << 18
IDLE_PER_NODE = 64  # kept-alive connections per node; more are closed after use


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class NodeBroken(Exception):
    """The connection to the node failed or closed before the response was complete."""


class _Target(NamedTuple):
    host: str
    port: int
    tls: bool
    host_header: bytes


@lru_cache(maxsize=1024)
def _target(base_url: str) -> _Target:
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if tls else 80)
    return _Target(host, port, tls, (parts.netloc or host).encode("idna"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; serves one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: NodeBroken | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.write_paused = False  # the node's socket buffer is full (an upload)

    # --- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NodeBroken(f"unreadable response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(NodeBroken(f"connection closed by the node ({exc or 'end of stream'})"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- for NodeResponse
    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: NodeBroken) -> None:
        if self.lost is None:
            self.lost = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def wait(self, silence: float) -> None:
        """Until the next parser event, or TimeoutError after `silence` seconds without one."""
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A bare timer, not asyncio.timeout(): that costs ~4x as much per wait (it cancels
        # and uncancels the task), and a request waits here at least twice.
        timer = loop.call_later(silence, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    async def writable(self, silence: float) -> None:
        """Until the node takes more of an upload (or answered, or the connection failed);
        TimeoutError if it takes nothing for `silence` seconds."""
        if self.lost is not None:
            raise self.lost
        while self.write_paused and not self.headers_done:
            await self.wait(silence)

    def start(self, request: bytes) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status, self.headers, self.headers_done, self.complete = 0, {}, False, False
        self.chunks.clear()
        self.buffered = 0
        assert self.transport is not None
        self.transport.write(request)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._fail(NodeBroken("connection closed by the router"))


class NodeResponse:
    """A node's response: status and headers now, the body as it arrives."""

    __slots__ = ("_client", "_conn", "_key", "_timeout", "headers", "status")

    def __init__(self, client: NodeClient, key: _Target, conn: _Connection, timeout: float):
        self._client, self._key, self._conn, self._timeout = client, key, conn, timeout
        self.status = conn.status
        self.headers = conn.headers

    async def readany(self) -> bytes:
        """The next part of the body; b"" at its end. NodeBroken, or TimeoutError when
        the node says nothing for the read timeout."""
        conn = self._conn
        while not conn.chunks:
            if conn.complete:
                return b""
            await conn.wait(self._timeout)
        return conn.take()

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: a complete one gives its connection back for reuse."""
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.lost is None and not conn.chunks:
            self._client.give_back(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (the node stops sending)."""
        self._conn.close()


def _headed(method: bytes, response: NodeResponse) -> NodeResponse:
    """A HEAD answer ends with its headers, whatever Content-Length it names (the parser
    cannot be told no body follows, so that connection is not reused)."""
    if method == b"HEAD":
        response._conn.complete = True
        response._conn.keep_alive = False
    return response


class NodeClient:
    """Keep-alive connections to every node, reused across requests."""

    def __init__(self) -> None:
        self._idle: dict[_Target, list[_Connection]] = {}
        self._tls = ssl.create_default_context()

    def give_back(self, key: _Target, conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < IDLE_PER_NODE:
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, key: _Target, within: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                _, conn = await loop.create_connection(
                    _Connection, key.host, key.port,
                    ssl=self._tls if key.tls else None,
                    server_hostname=key.host if key.tls else None,
                )
        except OSError as exc:
            raise NodeBroken(f"cannot connect: {exc.strerror or exc}") from exc
        return conn

    async def post(
        self, base_url: str, path: str, payload: bytes, *, connect_timeout: float,
        read_timeout: float, content_type: bytes = b"application/json", extra: bytes = b"",
    ) -> NodeResponse:
        """Send a POST (JSON unless `content_type` says otherwise; `extra` holds further
        header lines, each ending in CRLF); return once the response's headers arrived."""
        return await self.request(b"POST", base_url, path, payload,
                                  connect_timeout=connect_timeout, read_timeout=read_timeout,
                                  content_type=content_type, extra=extra)

    async def request(
        self, method: bytes, base_url: str, path: str, payload: bytes = b"", *,
        connect_timeout: float, read_timeout: float, content_type: bytes = b"application/json",
        extra: bytes = b"",
    ) -> NodeResponse:
        """Send a request with a JSON body (maybe empty); return once its headers arrived."""
        key = _target(base_url)
        request = (
            b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n%s"
            b"Content-Length: %d\r\n\r\n"
            % (method, path.encode(), key.host_header, content_type, extra, len(payload))
        ) + payload
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.lost is not None:
                continue
            try:
                return _headed(method, await self._exchange(key, conn, request, read_timeout))
            except NodeBroken:
                # the node closed a kept-alive connection as we reused it: a fresh one next
                if conn.headers_done:
                    raise
        conn = await self._connect(key, connect_timeout)
        return _headed(method, await self._exchange(key, conn, request, read_timeout))

    async def upload(
        self, method: bytes, base_url: str, path: str, body: AsyncIterable[bytes],
        length: int | None, *, connect_timeout: float, read_timeout: float,
    ) -> NodeResponse:
        """Send a request whose body streams from `body` (`length` bytes, or chunked when
        unknown); return once the response's headers arrived.

        A new connection each time: a kept-alive one the node closed meanwhile would need
        the body sent again, and a stream cannot be replayed. The node may answer before
        the body ends (a blob it already has): the rest is then not sent, and the
        connection not reused.
        """
        key = _target(base_url)
        framing = (b"Content-Length: %d" % length if length is not None
                   else b"Transfer-Encoding: chunked")
        head = (b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                b"%s\r\n\r\n" % (method, path.encode(), key.host_header, framing))
        conn = await self._connect(key, connect_timeout)
        try:
            conn.start(head)
            transport = conn.transport
            assert transport is not None
            whole = True
            async for chunk in body:
                if conn.headers_done:
                    whole = False
                    break
                if not chunk:
                    continue
                if length is None:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await conn.writable(read_timeout)
            if whole and length is None:
                if conn.headers_done:
                    whole = False  # answered before the last chunk was sent
                else:
                    transport.write(b"0\r\n\r\n")
            while not conn.headers_done:
                await conn.wait(read_timeout)
        except BaseException:
            conn.close()
            raise
        if not whole:
            conn.keep_alive = False  # part of the body is still owed: never reuse
        return NodeResponse(self, key, conn, read_timeout)

    async def _exchange(
        self, key: _Target, conn: _Connection, request: bytes, read_timeout: float
    ) -> NodeResponse:
        conn.start(request)
        try:
            while not conn.headers_done:
                await conn.wait(read_timeout)
        except BaseException:
            conn.close()
            raise
        return NodeResponse(self, key, conn, read_timeout)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
