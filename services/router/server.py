"""Runs one router replica: logging, Redis (given or embedded), uvicorn, graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from litestar import Litestar

from services.dashboard import dashboard_for
from services.router.app import create_app, with_fast_paths
from services.router.context import RouterContext
from shared.logs import setup_logging
from shared.redisconn import RedisUnavailable, redis_url_for
from shared.settings import Settings

__all__ = ["serve"]

log = logging.getLogger("herd.router")


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after shutdown; herd must first stop what it started."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        ctx = getattr(self._app.state, "herd", None)
        if isinstance(ctx, RouterContext):
            ctx.stopping = True  # a plain flag: safe to set from a signal handler
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    data = settings.data_path
    setup_logging(data, "herd", settings.log_level)
    try:
        with redis_url_for(settings.redis_url, data) as redis_url:
            app = create_app(settings, redis_url)
            config = uvicorn.Config(
                with_fast_paths(app),
                host=settings.host,
                port=settings.port,
                loop="uvloop",
                http="httptools",
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=10,
                server_header=False,
            )
            server = _Server(config, app)
            log.info("herd listening", extra={"host": settings.host, "port": settings.port})
            # The dashboard is a child that dies with herd; it retries until the API is up.
            with dashboard_for(settings):
                server.run()
            return 0 if server.started else 1
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 2
