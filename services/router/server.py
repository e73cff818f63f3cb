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
from shared.mdns import advertised_addresses
from shared.redisconn import RedisUnavailable, redis_url_for
from shared.settings import Settings

__all__ = ["node_command", "serve"]

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


def node_command(settings: Settings) -> str:
    """The exact line that joins a machine's Ollama to this router.

    The node token goes in the agent's environment, never on its command line (where `ps`
    and shell history would show it): `FLEET_NODE_TOKEN="$FLEET_NODE_TOKEN"` hands the
    variable of the shell it is pasted into to the agent without spelling out its value.
    """
    address = advertised_addresses(settings.host, settings.mdns_interfaces)[0]
    host = f"[{address}]" if ":" in address else address
    command = f"herd-node --router-url http://{host}:{settings.port}"
    if settings.node_token:
        command = f'FLEET_NODE_TOKEN="$FLEET_NODE_TOKEN" {command}'
    return command


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
            join = node_command(settings)
            note = (" (with FLEET_NODE_TOKEN set to this router's node token)"
                    if settings.node_token else "")
            print(f"herd: on each Ollama machine run{note}:\n  {join}", flush=True)
            # The dashboard is a child that dies with herd; it retries until the API is up.
            with dashboard_for(settings):
                server.run()
            return 0 if server.started else 1
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 2
