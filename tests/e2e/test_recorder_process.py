"""The recorder as real processes: inside a `herd` router (leader job) and as `herd recorder`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
import redis as sync_redis

from shared.keys import Keys
from shared.models import Trace
from tests.helpers import Proc, free_port, herd_bin, wait_until


def push(redis_url: str, keys: Keys, ids: range) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        for i in ids:
            trace = Trace(request_id=f"req-{i}", model="m:latest", original_model="m",
                          node_id="n1", timestamp=time.time(), retry_count=i % 2)
            client.xadd(keys.traces(), {"t": msgspec.json.encode(trace)})
    finally:
        client.close()


def count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(DISTINCT request_id) FROM request_traces")
                   .fetchone()[0]) if _has_table(con) else 0
    finally:
        con.close()


def _has_table(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE name='request_traces'").fetchone() \
        is not None


def test_router_leader_records_traces(
    tmp_path: Path, redis_url: str, prefix: str, keys: Keys
) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = Proc(
        [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns", "--no-dashboard",
         "--redis-url", redis_url, "--data-dir", str(data)],
        tmp_path / "herd.log", env={"FLEET_REDIS_PREFIX": prefix},
    )
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        push(redis_url, keys, range(25))
        wait_until(lambda: count(data / "latency.db") == 25, timeout=15,
                   message="25 traces in the router's latency.db")
        push(redis_url, keys, range(20, 30))  # five repeats, five new
        wait_until(lambda: count(data / "latency.db") == 30, timeout=15, message="30 traces")
    finally:
        assert proc.stop() == 0, proc.output()[-2000:]
    con = sqlite3.connect(data / "latency.db")
    assert con.execute("SELECT COUNT(*) FROM request_traces").fetchone() == (30,)
    con.close()


def test_standalone_recorder(tmp_path: Path, redis_url: str, prefix: str, keys: Keys) -> None:
    data = tmp_path / "alone"
    env = {"FLEET_REDIS_PREFIX": prefix}
    push(redis_url, keys, range(10))
    once = subprocess.run(
        [herd_bin(), "recorder", "--once", "--redis-url", redis_url, "--data-dir", str(data)],
        env={**os.environ, **env}, capture_output=True, timeout=60, check=False,
    )
    assert once.returncode == 0, once.stderr.decode()[-2000:]
    assert count(data / "latency.db") == 10
    proc = Proc([herd_bin(), "recorder", "--redis-url", redis_url, "--data-dir", str(data)],
                tmp_path / "recorder.log", env=env)
    try:
        push(redis_url, keys, range(10, 40))
        wait_until(lambda: count(data / "latency.db") == 40, timeout=15, message="40 traces")
        proc.signal(signal.SIGTERM)
        assert proc.process.wait(10) == 0, proc.output()[-2000:]
    finally:
        proc.stop()


def test_standalone_recorder_needs_a_redis_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    for name in ("FLEET_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["recorder", "--data-dir", str(tmp_path)]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert main(["recorder", "--redis-url", "redis://127.0.0.1:1/0",
                 "--data-dir", str(tmp_path)]) == 2
    assert "cannot reach Redis" in capsys.readouterr().err
