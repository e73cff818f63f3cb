"""The recorder as a child process of the router replica that leads (its leader job).

latency.db's batches (reading the traces stream, decoding, SQLite, acknowledging) then use
a process of their own instead of the serving process's CPU and event loop. The replica
starts `python -m services.recorder.child` and writes one JSON line to its stdin (`Job`:
the Redis URL may hold a password, so never on the command line); the child records until
SIGTERM (the replica lost the lead or stops) and dies with the replica
(shared.children.die_with_parent), so a killed router leaves no recorder behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import msgspec

from services.recorder.recorder import Recorder
from shared.keys import Keys
from shared.logs import setup_logging
from shared.redisconn import connect, is_cluster

__all__ = ["Job", "main"]

log = logging.getLogger("herd.recorder")


class Job(msgspec.Struct, frozen=True):
    """What the replica tells its recorder child."""

    redis_url: str
    key_prefix: str
    redis_timeout: float
    data_dir: str
    consumer: str  # the replica's id: the consumer its pending entries belong to
    retention_days: float
    log_level: str = "INFO"


async def record(job: Job) -> None:
    """Record until SIGTERM or SIGINT."""
    redis = connect(job.redis_url, timeout=job.redis_timeout, key_prefix=job.key_prefix)
    recorder = Recorder(
        redis, Keys.for_redis(job.key_prefix, cluster=is_cluster(redis)),
        Path(job.data_dir) / "latency.db", job.consumer, retention_days=job.retention_days,
    )
    task = asyncio.create_task(recorder.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await redis.aclose()
    log.info("recorder stopped", extra={"written": recorder.written})


def main() -> int:
    job = msgspec.json.decode(sys.stdin.buffer.readline(), type=Job)
    setup_logging(Path(job.data_dir), "herd-recorder", job.log_level, console=False)
    asyncio.run(record(job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
