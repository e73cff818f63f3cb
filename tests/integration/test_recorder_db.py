"""The recorder: traces stream -> latency.db, exactly once, with ollama-herd's tables."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from redis.asyncio import Redis

from services.recorder.recorder import GROUP, Recorder, TraceDB
from services.router.fleet.core import Core
from services.router.fleet.traces import add_trace
from shared.keys import Keys
from shared.models import Trace, TraceStatus, decode_trace
from shared.redisconn import connect
from shared.settings import Settings

COMPAT_COLUMNS = [
    "id", "request_id", "model", "original_model", "node_id", "score", "scores_breakdown",
    "status", "latency_ms", "time_to_first_token_ms", "prompt_tokens", "completion_tokens",
    "retry_count", "fallback_used", "excluded_nodes", "client_ip", "original_format",
    "error_message", "timestamp", "tags", "finish_reason", "estimated_tokens",
]


def make_trace(i: int, **changes: object) -> Trace:
    fields: dict[str, object] = {
        "request_id": f"req-{i}", "model": "llama3.2:3b", "original_model": "llama3.2",
        "node_id": f"node-{i % 3}", "status": TraceStatus.COMPLETED,
        "latency_ms": 100.0 + i, "time_to_first_token_ms": 20.0, "prompt_tokens": 10,
        "completion_tokens": 5, "retry_count": i % 2, "timestamp": time.time(),
        "scores_breakdown": {"loaded": 40.0}, "tags": ["app"],
    }
    fields.update(changes)
    return Trace(**fields)  # type: ignore[arg-type]


async def push(redis: Redis, settings: Settings, traces: list[Trace]) -> None:
    ctx = Core.create(settings, redis)
    async with redis.pipeline(transaction=False) as pipe:
        for trace in traces:
            add_trace(pipe, ctx, trace)
        await pipe.execute()


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute(sql, params))
    finally:
        con.close()


async def drain(recorder: Recorder) -> None:
    while await recorder.read_new(block_ms=50):
        pass


async def test_two_recorders_racing_write_each_trace_once(
    redis_url: str, redis: Redis, keys: Keys, settings: Settings, data_dir: Path
) -> None:
    db = data_dir / "latency.db"
    clients = [connect(redis_url), connect(redis_url)]
    recorders = [
        Recorder(c, keys, db, f"rec-{i}", batch=25) for i, c in enumerate(clients)
    ]
    for r in recorders:
        await r.open()
    try:
        await push(redis, settings, [make_trace(i) for i in range(300)])
        await asyncio.gather(*(drain(r) for r in recorders))
        assert sum(r.written for r in recorders) == 300
        assert all(r.written > 0 for r in recorders), "both took part"
        assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM request_traces") == [
            (300, 300)
        ]
        pending = await redis.xpending(keys.traces(), GROUP)
        assert pending["pending"] == 0
        # Observations only for completed requests, once each.
        assert rows(db, "SELECT COUNT(*) FROM latency_observations") == [(300,)]
    finally:
        for r in recorders:
            await r.close()
        for c in clients:
            await c.aclose()


async def test_a_recorder_dying_mid_batch_loses_and_duplicates_nothing(
    redis: Redis, keys: Keys, settings: Settings, data_dir: Path
) -> None:
    db = data_dir / "latency.db"
    await redis.xgroup_create(keys.traces(), GROUP, id="0", mkstream=True)
    await push(redis, settings, [make_trace(i) for i in range(20)])
    # The dying recorder read 12 entries and committed the first 6, then died before XACK.
    reply = await redis.xreadgroup(GROUP, "dead", {keys.traces(): ">"}, count=12)
    entries = reply[0][1]
    half = [decode_trace(fields) for _, fields in entries[:6]]
    dead_db = TraceDB(db)
    assert dead_db.write([t for t in half if t is not None]) == 6
    dead_db.close()

    survivor = Recorder(redis, keys, db, "survivor", claim_idle_ms=1)
    await survivor.open()
    try:
        await asyncio.sleep(0.01)
        assert await survivor.claim_stale() == 12
        await drain(survivor)
        assert survivor.written == 14  # 6 re-delivered ones were already there
        assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM request_traces") == [
            (20, 20)
        ]
        assert rows(db, "SELECT COUNT(*) FROM latency_observations") == [(20,)]
        assert (await redis.xpending(keys.traces(), GROUP))["pending"] == 0
    finally:
        await survivor.close()


async def test_compat_queries_on_the_file(
    redis: Redis, keys: Keys, settings: Settings, data_dir: Path
) -> None:
    db = data_dir / "latency.db"
    day = 86400 * 20000  # a midnight, UTC
    traces = [
        make_trace(1, node_id="alpha", retry_count=2, timestamp=day + 3600 * 1 + 5),
        make_trace(2, node_id="alpha", retry_count=0, timestamp=day + 3600 * 1 + 50),
        make_trace(3, node_id="beta", retry_count=1, timestamp=day + 3600 * 13,
                   status=TraceStatus.FAILED, error_message="boom", latency_ms=2500.0),
        make_trace(4, node_id="beta", retry_count=0, timestamp=day + 3600 * 13 + 7,
                   status=TraceStatus.CLIENT_DISCONNECTED),
        make_trace(5, node_id="gamma", retry_count=0, timestamp=day + 3600 * 23),
        make_trace(6, node_id="", retry_count=0, timestamp=day + 3600 * 23 + 1,
                   status=TraceStatus.REJECTED, error_message="model not found"),
    ]
    await push(redis, settings, traces)
    recorder = Recorder(redis, keys, db, "r", retention_days=1e6)
    await recorder.open()
    try:
        await drain(recorder)
    finally:
        await recorder.close()
    assert [r[1] for r in rows(db, "PRAGMA table_info(request_traces)")] == COMPAT_COLUMNS
    obs = [r[1] for r in rows(db, "PRAGMA table_info(latency_observations)")]
    assert obs[1:] == ["node_id", "model_name", "latency_ms", "tokens_generated", "timestamp",
                       "prompt_tokens", "completion_tokens"]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    # ollama-herd's columns
    assert sorted(rows(db, "SELECT node_id, SUM(retry_count), COUNT(*) FROM request_traces "
                           "GROUP BY node_id")) == [("(unrouted)", 0, 1), ("alpha", 2, 2),
                                                    ("beta", 1, 2), ("gamma", 0, 1)]
    # seed/ollama-load-balancer-skill.txt
    failed = rows(db, "SELECT request_id, model, status, error_message, latency_ms/1000.0 as "
                      "secs FROM request_traces WHERE status='failed' ORDER BY timestamp DESC "
                      "LIMIT 10")
    assert failed == [("req-3", "llama3.2:3b", "failed", "boom", 2.5)]
    retries = rows(db, "SELECT node_id, SUM(retry_count) as retries, COUNT(*) as total FROM "
                       "request_traces GROUP BY node_id ORDER BY retries DESC")
    assert retries[0] == ("alpha", 2, 2)
    hours = rows(db, "SELECT CAST((timestamp % 86400) / 3600 AS INTEGER) as hour, COUNT(*) as "
                     "requests FROM request_traces GROUP BY hour ORDER BY hour")
    assert hours == [(1, 2), (13, 2), (23, 2)]
    tags = rows(db, "SELECT j.value, COUNT(*) FROM request_traces, json_each(request_traces.tags)"
                    " AS j GROUP BY j.value")
    assert tags == [("app", 6)]
    assert rows(db, "SELECT COUNT(*) FROM latency_observations") == [(3,)]
    assert rows(db, "SELECT COUNT(*) FROM benchmark_runs") == [(0,)]


async def test_retention_deletes_old_rows(
    redis: Redis, keys: Keys, settings: Settings, data_dir: Path
) -> None:
    db = data_dir / "latency.db"
    old = time.time() - 40 * 86400
    await push(redis, settings, [make_trace(1, timestamp=old), make_trace(2)])
    recorder = Recorder(redis, keys, db, "r", retention_days=30)
    await recorder.open()
    try:
        await drain(recorder)
        assert await recorder.apply_retention() == 1
    finally:
        await recorder.close()
    assert rows(db, "SELECT request_id FROM request_traces") == [("req-2",)]
    assert rows(db, "SELECT COUNT(*) FROM latency_observations") == [(1,)]


async def test_an_ollama_herd_file_is_upgraded_in_place(
    redis: Redis, keys: Keys, settings: Settings, data_dir: Path
) -> None:
    db = data_dir / "latency.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE request_traces (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT "
        "NOT NULL, model TEXT NOT NULL, original_model TEXT NOT NULL, node_id TEXT NOT NULL, "
        "score REAL, scores_breakdown TEXT, status TEXT NOT NULL, latency_ms REAL, "
        "time_to_first_token_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER, "
        "retry_count INTEGER DEFAULT 0, fallback_used INTEGER DEFAULT 0, excluded_nodes TEXT, "
        "client_ip TEXT, original_format TEXT, error_message TEXT, timestamp REAL NOT NULL)"
    )
    for _ in range(2):  # the old tool wrote one row per attempt
        con.execute("INSERT INTO request_traces (request_id, model, original_model, node_id, "
                    "status, timestamp) VALUES ('old', 'm', 'm', 'n', 'retried', 1.0)")
    con.commit()
    con.close()
    await push(redis, settings, [make_trace(1), make_trace(1), make_trace(2)])
    recorder = Recorder(redis, keys, db, "r", retention_days=1e6)
    await recorder.open()
    try:
        await drain(recorder)
    finally:
        await recorder.close()
    assert [r[1] for r in rows(db, "PRAGMA table_info(request_traces)")] == COMPAT_COLUMNS
    assert rows(db, "SELECT request_id, COUNT(*) FROM request_traces GROUP BY request_id "
                    "ORDER BY request_id") == [("old", 2), ("req-1", 1), ("req-2", 1)]
