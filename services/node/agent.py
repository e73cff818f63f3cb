"""The node agent's main loop: sample, post a heartbeat, repeat; a draining goodbye on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.node.discovery import Discovery, RouterDirectory
from services.node.sampler import Sampler
from shared.logs import setup_logging
from shared.settings import Settings

__all__ = ["Agent", "run"]

log = logging.getLogger("herd.node")


class Agent:
    """One agent: where to post (RouterDirectory), what to post (Sampler), how often."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.resolved_node_id
        self.routers = RouterDirectory(settings.router_urls)
        self.sampler = Sampler(settings.node_ollama_host, settings.num_parallel,
                               memory_gb=settings.node_memory_gb)
        headers = {"User-Agent": "herd-node"}
        if settings.node_token:
            headers["Authorization"] = f"Bearer {settings.node_token}"
        # A heartbeat that takes longer than its interval is no use; a dead router must
        # not hold up failing over to the next one.
        timeout = max(0.5, min(3.0, settings.heartbeat_interval))
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._discovery: Discovery | None = None
        self._ollama_was_up: bool | None = None
        self._unreachable_since: float | None = None

    async def start(self) -> None:
        if not self.settings.router_urls and self.settings.mdns_enabled:
            self._discovery = Discovery(self.routers, self.settings.mdns_interfaces,
                                        self.settings.fleet_name)
            await self._discovery.start()
        elif not self.settings.router_urls:
            log.warning("no --router-url and mDNS is off: nowhere to send heartbeats")

    async def close(self) -> None:
        if self._discovery is not None:
            await self._discovery.stop()
        await self.sampler.aclose()
        await self._client.aclose()

    async def post(self, payload: dict[str, Any]) -> str | None:
        """Post to the best known router, failing over to the others; the URL that took it."""
        for url in self.routers.candidates():
            try:
                response = await self._client.post(f"{url}/heartbeat", json=payload)
            except httpx.HTTPError as exc:
                log.debug("router unreachable", extra={"router": url, "error": repr(exc)})
                self.routers.failed(url)
                continue
            if response.status_code == 200:
                self.routers.succeeded(url)
                if self._unreachable_since is not None:
                    log.info("routers reachable again")
                    self._unreachable_since = None
                return url
            log.warning("router refused the heartbeat", extra={
                "router": url, "status": response.status_code, "body": response.text[:300]})
            self.routers.failed(url)
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.warning("no router took the heartbeat", extra={"known": self.routers.urls()})
        return None

    async def beat(self) -> str | None:
        router_host = urlsplit(self.routers.current or "").hostname or ""
        payload = await self.sampler.sample(self.node_id, router_host)
        payload["draining"] = False
        up = bool(payload["ollama"]["up"])
        if up != self._ollama_was_up:
            log.log(logging.INFO if up else logging.WARNING,
                    "ollama %s", "up" if up else "down",
                    extra={"ollama": self.sampler.ollama_host,
                           "error": payload["ollama"].get("error", "")})
            self._ollama_was_up = up
        return await self.post(payload)

    async def goodbye(self) -> None:
        """The draining heartbeat: routers stop sending new work here at once."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.post({"node_id": self.node_id, "draining": True}), 5.0)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.heartbeat_interval
        await self.start()
        try:
            while not stop.is_set():
                started = time.monotonic()
                if not self.routers.urls():
                    # Nothing to post to yet: wait for discovery rather than a whole interval.
                    self.routers.changed.clear()
                    await _first(stop.wait(), self.routers.changed.wait(), limit=interval)
                    continue
                await self.beat()
                delay = max(0.0, interval - (time.monotonic() - started))
                await _first(stop.wait(), limit=delay)
            await self.goodbye()
        finally:
            await self.close()


async def _first(*waits: Any, limit: float) -> None:
    """Wait until any of the coroutines finishes or the timeout passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    log.info("herd-node starting", extra={
        "node_id": agent.node_id, "ollama": agent.sampler.ollama_host,
        "routers": list(settings.router_urls) or "mdns",
        "memory_gb": settings.node_memory_gb or "machine",
        "interval": settings.heartbeat_interval})
    await agent.run(stop)
    log.info("herd-node stopped", extra={"node_id": agent.node_id})
    return 0


def run(settings: Settings) -> int:
    """Run the agent until SIGTERM/SIGINT; the process exit code."""
    setup_logging(settings.data_path, "herd-node", settings.log_level)
    # One line per Ollama probe and heartbeat would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_main(settings))
