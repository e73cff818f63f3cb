"""The recorder: copies the traces stream into <data dir>/latency.db, each request exactly once.

It reads with the consumer group `recorder` (so several recorders never get the same
entry), writes a batch in one SQLite transaction on its own thread, and XACKs only after
the commit. While it keeps up, it pauses between reads so that each transaction takes
hundreds of traces rather than one (a commit per request is what made the tool Herd
replaces slow). A recorder that dies mid-batch leaves its entries pending; another one takes
them over with XAUTOCLAIM, and `INSERT OR IGNORE` on the unique request_id makes a second
write of the same request a no-op. Tables and columns are ollama-herd's (docs/queueing.md,
"Traces and latency.db"), so operators' `sqlite3` queries keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.keys import Keys
from shared.models import Trace, TraceStatus, decode_trace

__all__ = ["GROUP", "UNROUTED", "Recorder", "TraceDB"]

log = logging.getLogger("herd.recorder")

GROUP = "recorder"
BATCH = 2000
BLOCK_MS = 1000
# After a batch smaller than BATCH, wait this long for the stream to fill before reading
# again: the traces are safe in the stream meanwhile, and latency.db is an archive.
PACE_SECONDS = 1.0
CLAIM_IDLE_MS = 60_000  # an entry pending this long belongs to a recorder that died
RETENTION_EVERY_SECONDS = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS request_traces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    model TEXT NOT NULL,
    original_model TEXT NOT NULL,
    node_id TEXT NOT NULL,
    score REAL,
    scores_breakdown TEXT,
    status TEXT NOT NULL,
    latency_ms REAL,
    time_to_first_token_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    retry_count INTEGER DEFAULT 0,
    fallback_used INTEGER DEFAULT 0,
    excluded_nodes TEXT,
    client_ip TEXT,
    original_format TEXT,
    error_message TEXT,
    timestamp REAL NOT NULL,
    tags TEXT,
    finish_reason TEXT,
    estimated_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS idx_traces_timestamp ON request_traces(timestamp);
CREATE INDEX IF NOT EXISTS idx_traces_model_timestamp ON request_traces(model, timestamp);
CREATE INDEX IF NOT EXISTS idx_traces_node_model ON request_traces(node_id, model);
CREATE TABLE IF NOT EXISTS latency_observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    tokens_generated INTEGER,
    timestamp REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS idx_latency_node_model ON latency_observations(node_id, model_name);
CREATE INDEX IF NOT EXISTS idx_latency_timestamp ON latency_observations(timestamp);
CREATE INDEX IF NOT EXISTS idx_latency_model_timestamp
    ON latency_observations(model_name, timestamp);
CREATE TABLE IF NOT EXISTS benchmark_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    timestamp REAL NOT NULL,
    duration_s REAL NOT NULL,
    total_requests INTEGER NOT NULL,
    total_failures INTEGER NOT NULL,
    total_prompt_tokens INTEGER NOT NULL,
    total_completion_tokens INTEGER NOT NULL,
    requests_per_sec REAL,
    tokens_per_sec REAL,
    latency_p50_ms REAL,
    latency_p95_ms REAL,
    latency_p99_ms REAL,
    ttft_p50_ms REAL,
    ttft_p95_ms REAL,
    ttft_p99_ms REAL,
    fleet_snapshot TEXT,
    per_model_results TEXT,
    per_node_results TEXT,
    peak_utilization TEXT
);
CREATE INDEX IF NOT EXISTS idx_benchmark_runs_timestamp ON benchmark_runs(timestamp);
"""

# Columns an ollama-herd latency.db may lack (it added them over time).
_LATE_COLUMNS = (("tags", "TEXT"), ("finish_reason", "TEXT"), ("estimated_tokens", "INTEGER"))

# node_id of requests that never reached a node (rejected before routing: bad model, full
# queue, no node able to serve it). An operator's GROUP BY node_id then shows a named row
# instead of an empty one; the parentheses keep it apart from any real node name.
UNROUTED = "(unrouted)"

_TRACE_COLUMNS = (
    "request_id", "model", "original_model", "node_id", "score", "scores_breakdown",
    "status", "latency_ms", "time_to_first_token_ms", "prompt_tokens", "completion_tokens",
    "retry_count", "fallback_used", "excluded_nodes", "client_ip", "original_format",
    "error_message", "timestamp", "tags", "finish_reason", "estimated_tokens",
)
_INSERT_TRACE = (
    "INSERT OR IGNORE INTO request_traces (request_id, model, original_model, node_id, "
    "score, scores_breakdown, status, latency_ms, time_to_first_token_ms, prompt_tokens, "
    "completion_tokens, retry_count, fallback_used, excluded_nodes, client_ip, "
    "original_format, error_message, timestamp, tags, finish_reason, estimated_tokens) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# One parameter (a JSON array) whatever the batch size: no host-parameter limit to mind.
_KNOWN_IDS = (
    "SELECT request_id FROM request_traces WHERE request_id IN (SELECT value FROM json_each(?))"
)
_INSERT_OBSERVATION = (
    "INSERT INTO latency_observations (node_id, model_name, latency_ms, tokens_generated, "
    "timestamp, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _json_or_null(value: Any) -> str | None:
    # json.dumps's spacing, as ollama-herd wrote it: operators' LIKE patterns keep matching
    return json.dumps(value) if value else None


def trace_row(trace: Trace) -> tuple[Any, ...]:
    """The request_traces values of one trace, in _TRACE_COLUMNS order."""
    return (
        trace.request_id, trace.model, trace.original_model or trace.model,
        trace.node_id or UNROUTED,
        trace.score, _json_or_null(trace.scores_breakdown), str(trace.status),
        trace.latency_ms, trace.time_to_first_token_ms, trace.prompt_tokens,
        trace.completion_tokens, trace.retry_count, int(trace.fallback_used),
        _json_or_null(trace.excluded_nodes), trace.client_ip, trace.original_format,
        trace.error_message or None, trace.timestamp or time.time(),
        _json_or_null(trace.tags), trace.finish_reason or None, trace.estimated_tokens,
    )


class TraceDB:
    """latency.db, used from one thread only (the recorder's executor)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(request_traces)")}
        for name, kind in _LATE_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE request_traces ADD COLUMN {name} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS idx_traces_tags ON request_traces(tags)")
        try:
            self._db.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS idx_traces_request_id_unique "
                "ON request_traces(request_id)"
            )
        except sqlite3.IntegrityError:
            log.warning("latency.db has duplicate request ids from an older tool; "
                        "new traces are still written once each")
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS idx_traces_request_id ON request_traces(request_id)"
            )

    def write(self, traces: Sequence[Trace]) -> int:
        """Insert in one transaction; returns how many were new (duplicates are skipped)."""
        batch: dict[str, Trace] = {}
        for trace in traces:
            batch.setdefault(trace.request_id, trace)  # a re-delivery within the batch
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            # Known ids are looked up rather than left to the unique index: a legacy file
            # with duplicate ids has none, and the observations follow only new traces.
            for (known,) in cur.execute(_KNOWN_IDS, (json.dumps(list(batch)),)):
                batch.pop(known, None)
            new = list(batch.values())
            cur.executemany(_INSERT_TRACE, [trace_row(t) for t in new])
            now = time.time()
            cur.executemany(_INSERT_OBSERVATION, [
                (t.node_id, t.model, t.latency_ms, t.completion_tokens, t.timestamp or now,
                 t.prompt_tokens, t.completion_tokens)
                for t in new if t.status is TraceStatus.COMPLETED and t.node_id
            ])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return len(new)

    def delete_older_than(self, cutoff: float) -> int:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("DELETE FROM request_traces WHERE timestamp < ?", (cutoff,))
        removed = cur.rowcount
        cur.execute("DELETE FROM latency_observations WHERE timestamp < ?", (cutoff,))
        cur.execute("COMMIT")
        return removed

    def close(self) -> None:
        self._db.close()


class Recorder:
    """One consumer of the `recorder` group writing into one latency.db."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        db_path: Path,
        consumer: str,
        *,
        retention_days: float = 30.0,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        batch: int = BATCH,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.db_path = db_path
        self.consumer = consumer
        self.retention_days = retention_days
        self._claim_idle_ms = claim_idle_ms
        self._batch = batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herd-recorder")
        self._db: TraceDB | None = None
        self._claim_from = "0-0"
        self.written = 0

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        self._db = await self._in_thread(TraceDB, self.db_path)
        try:
            await self._redis.xgroup_create(self._keys.traces(), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        if self._db is not None:
            await self._in_thread(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def claim_stale(self) -> int:
        """Take over entries a dead recorder read but never acknowledged; returns how many."""
        taken = 0
        while True:
            reply = await self._redis.xautoclaim(
                self._keys.traces(), GROUP, self.consumer, self._claim_idle_ms,
                start_id=self._claim_from, count=self._batch,
            )
            next_id, entries = str(reply[0]), reply[1]
            taken += await self._store(entries)
            self._claim_from = next_id
            if next_id == "0-0":
                return taken

    async def read_new(self, block_ms: int = BLOCK_MS) -> int:
        """Read and store one batch of new entries (waiting up to block_ms); returns count."""
        reply = await self._redis.xreadgroup(
            GROUP, self.consumer, {self._keys.traces(): ">"},
            count=self._batch, block=block_ms,
        )
        stored = 0
        for _stream, entries in reply or []:
            stored += await self._store(entries)
        return stored

    async def _store(self, entries: Sequence[Any]) -> int:
        # A trimmed entry comes back from XAUTOCLAIM as None: nothing to write, only to ack.
        ids = [str(e[0]) for e in entries if e]
        traces: list[Trace] = []
        for entry in entries:
            if not entry or not entry[1]:
                continue
            trace = decode_trace(entry[1])
            if trace is None:
                log.warning("skipping a malformed trace entry", extra={"entry": str(entry[0])})
            else:
                traces.append(trace)
        if traces:
            assert self._db is not None, "open() first"
            self.written += await self._in_thread(self._db.write, traces)
        if ids:
            # Only after the commit: a crash before this line means a re-delivery, not a loss.
            await self._redis.xack(self._keys.traces(), GROUP, *ids)
        return len(ids)

    async def apply_retention(self) -> int:
        assert self._db is not None, "open() first"
        cutoff = time.time() - self.retention_days * 86400
        removed: int = await self._in_thread(self._db.delete_older_than, cutoff)
        return removed

    async def run(self) -> None:
        """Record until cancelled."""
        await self.open()
        next_claim = 0.0
        next_retention = 0.0
        try:
            while True:
                try:
                    now = time.monotonic()
                    if now >= next_retention:
                        await self.apply_retention()
                        next_retention = now + RETENTION_EVERY_SECONDS
                    if now >= next_claim:
                        await self.claim_stale()
                        next_claim = now + self._claim_idle_ms / 2000
                    if 0 < await self.read_new() < self._batch:
                        await asyncio.sleep(PACE_SECONDS)
                except (RedisError, OSError, sqlite3.Error) as exc:
                    log.warning("recorder pass failed; retrying", extra={"error": str(exc)})
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(RedisError, sqlite3.Error):
                await self.close()
