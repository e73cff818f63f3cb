"""The Redis factory and the Lua loader, against a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.redisconn import EmbeddedRedis, RedisUnavailable, check_redis
from shared.scripts import Scripts, script_source
from tests.helpers import wait_until


async def test_lua_loader_runs_a_script(redis: Redis, keys: Keys) -> None:
    scripts = Scripts(redis)
    assert "redis.call" in script_source("ping")
    assert await scripts.run("ping", [keys.leader()], ["hello"]) == "hello"
    # The second call goes by SHA (the script is cached server-side now).
    assert await scripts.run("ping", [keys.leader()], ["again"]) == "again"


def test_unreachable_url_is_one_clear_line() -> None:
    with pytest.raises(RedisUnavailable) as info:
        check_redis("redis://127.0.0.1:1/0", timeout=0.5)
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in str(info.value)
    assert "\n" not in str(info.value)


def test_embedded_redis_starts_and_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    check_redis(url)
    assert (tmp_path / "redis" / "redis.pid").exists()
    server.stop()
    with pytest.raises(RedisUnavailable):
        check_redis(url, timeout=0.5)
    assert not (tmp_path / "redis" / "redis.pid").exists()


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie is dead, only not yet reaped


def test_embedded_redis_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the owning process must not leave its redis-server running."""
    code = (
        "import sys, time; from pathlib import Path; from shared.redisconn import EmbeddedRedis;"
        "s = EmbeddedRedis(Path(sys.argv[1])); s.start();"
        "print(s.process.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())
    assert _pid_alive(redis_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_until(lambda: not _pid_alive(redis_pid), timeout=5, message="redis-server to exit")


def test_stale_server_from_an_earlier_run_is_reaped(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    assert first.process is not None
    old_pid = first.process.pid
    first.process = None  # forget it, as a killed herd would (pid file stays)
    second = EmbeddedRedis(tmp_path)
    second.start()
    try:
        wait_until(lambda: not _pid_alive(old_pid), timeout=5, message="stale redis to stop")
        check_redis(second.url)
    finally:
        second.stop()
