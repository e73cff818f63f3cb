"""`herd recorder`: copy the fleet's traces into one latency.db, outside the routers.

For operators whose router replicas run on several machines: each leader would write its
own <data dir>/latency.db; one standalone recorder (with FLEET_RECORDER_ENABLED=false on
the routers) keeps the whole fleet's history in one file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys

from redis.exceptions import RedisError

from services.cli import add_common_flags, settings_from_args
from services.recorder.recorder import Recorder
from shared.keys import Keys
from shared.logs import setup_logging
from shared.redisconn import RedisUnavailable, check_redis, connect, is_cluster
from shared.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger("herd.recorder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", dest="redis_url", default=None,
                        help="The fleet's Redis, e.g. redis://10.0.0.5:6379/0 (FLEET_REDIS_URL).")
    add_common_flags(parser)
    parser.add_argument("--once", action="store_true",
                        help="Record what is in the stream now, then exit.")


async def _record(settings: Settings, once: bool) -> int:
    redis = connect(settings.redis_url, timeout=settings.redis_timeout,
                    key_prefix=settings.redis_prefix)
    consumer = f"standalone-{socket.gethostname()}"
    recorder = Recorder(
        redis, Keys.for_redis(settings.redis_prefix, cluster=is_cluster(redis)),
        settings.data_path / "latency.db", consumer,
        retention_days=settings.trace_retention_days,
    )
    try:
        if once:
            await recorder.open()
            await recorder.apply_retention()
            await recorder.claim_stale()
            while await recorder.read_new(block_ms=100):
                pass
            await recorder.close()
        else:
            task = asyncio.create_task(recorder.run())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("recorder stopped", extra={"written": recorder.written})
        return 0
    except RedisError as exc:
        log.error("recorder cannot use Redis: %s", exc)
        return 2
    finally:
        await redis.aclose()


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.redis_url:
        print("herd recorder: --redis-url (or FLEET_REDIS_URL) is required: the recorder "
              "reads the routers' Redis", file=sys.stderr)
        return 2
    try:
        check_redis(settings.redis_url)
    except RedisUnavailable as exc:
        print(f"herd recorder: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.data_path, "herd-recorder", settings.log_level)
    return asyncio.run(_record(settings, args.once))
