"""Runs the router: logging, Redis (given or embedded), the dashboard, and one uvicorn replica
per worker process, with a graceful shutdown.

With `--workers N` (N > 1) this process becomes a supervisor: it starts the embedded Redis
and the dashboard once, then N worker processes that each bind the port with SO_REUSEPORT
(the kernel spreads connections over them) and run a full replica of their own. Only the
first advertises over mDNS; the leader jobs run once fleet-wide anyway (a Redis lease).
A worker that exits on its own stops the rest: the router is up whole or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from litestar import Litestar

from services.dashboard import dashboard_for
from services.router.app import create_app, with_fast_paths
from services.router.context import RouterContext
from services.router.cors import with_cors
from shared.children import die_with_parent
from shared.keys import hash_tagged
from shared.logs import setup_logging
from shared.mdns import advertised_addresses
from shared.redisconn import RedisUnavailable, redis_url_for
from shared.redisurl import CLUSTER_SCHEMES
from shared.settings import Settings, SettingsError

__all__ = ["node_command", "serve"]

log = logging.getLogger("herd.router")

STOP_WORKERS_S = 15.0  # uvicorn's graceful shutdown (10 s) and the lifespan's end


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
    if settings.workers < 1:
        raise SettingsError(f"workers must be at least 1, got {settings.workers}")
    if settings.redis_url.partition("://")[0] in CLUSTER_SCHEMES:
        try:
            hash_tagged(settings.redis_prefix)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    data = settings.data_path
    setup_logging(data, "herd", settings.log_level)
    try:
        with redis_url_for(settings.redis_url, data) as redis_url:
            join = node_command(settings)
            note = (" (with FLEET_NODE_TOKEN set to this router's node token)"
                    if settings.node_token else "")
            print(f"herd: on each Ollama machine run{note}:\n  {join}", flush=True)
            # The dashboard is a child that dies with herd; it retries until the API is up.
            with dashboard_for(settings):
                if settings.workers == 1:
                    return run_replica(settings, redis_url)
                return _supervise(settings, redis_url)
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 2


def run_replica(settings: Settings, redis_url: str,
                sockets: list[socket.socket] | None = None) -> int:
    """One replica in this process, on `sockets` or on settings.host:port."""
    app = create_app(settings, redis_url)
    config = uvicorn.Config(
        with_cors(with_fast_paths(app), settings.cors_origins),
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
    log.info("herd listening", extra={"host": settings.host, "port": settings.port,
                                      "pid": os.getpid()})
    server.run(sockets=sockets)
    return 0 if server.started else 1


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_main(settings: Settings, redis_url: str, index: int) -> None:
    """A worker process (spawned): its own log file, its own socket on the shared port."""
    die_with_parent()  # SIGTERM if the supervisor dies; Ctrl-C reaches the supervisor only
    setup_logging(settings.data_path, f"herd-worker{index}", settings.log_level)
    if index:
        settings = settings.replace(mdns_enabled=False)  # one advertisement per host
    try:
        sock = _reuseport_socket(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen", extra={"port": settings.port, "error": str(exc)})
        sys.exit(1)
    sys.exit(run_replica(settings, redis_url, sockets=[sock]))


def _supervise(settings: Settings, redis_url: str) -> int:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker_main, args=(settings, redis_url, index),
                             name=f"herd-worker{index}", daemon=False)
               for index in range(settings.workers)]
    stopping = threading.Event()

    def stop(sig: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        stopping.set()
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed = False
    try:
        for worker in workers:
            if not stopping.is_set():
                worker.start()
        log.info("herd workers started", extra={"workers": settings.workers,
                                                "pids": [w.pid for w in workers]})
        while running := [w for w in workers if w.pid is not None and w.exitcode is None]:
            multiprocessing.connection.wait([w.sentinel for w in running])
            ended = [w for w in workers if w.exitcode is not None]
            if ended and not stopping.is_set():
                log.error("a router worker exited; stopping the others",
                          extra={"worker": ended[0].name, "exit_code": ended[0].exitcode})
                failed = True
                stop()
    finally:
        stop()
        for worker in workers:
            if worker.pid is None:
                continue
            worker.join(STOP_WORKERS_S)
            if worker.exitcode is None:
                worker.kill()
                worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed or any(w.exitcode for w in workers if w.pid is not None) else 0
