"""Which routers the agent posts to: the given URLs, or those found (and lost) over mDNS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from shared.mdns import SERVICE_TYPE, mdns_interfaces

__all__ = ["Discovery", "RouterDirectory"]

log = logging.getLogger("herd.node")

RESOLVE_TIMEOUT_MS = 3000


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


class RouterDirectory:
    """Known routers in preference order: the one that last answered first, failed ones last."""

    def __init__(self, static: Sequence[str] = ()) -> None:
        self._static = [u.rstrip("/") for u in static if u.strip()]
        self._found: dict[str, list[str]] = {}  # mDNS service name -> its URLs
        self._current: str | None = None
        self._failed: dict[str, int] = {}  # url -> consecutive failures
        self.changed = asyncio.Event()

    def add(self, name: str, urls: list[str]) -> None:
        if self._found.get(name) != urls:
            log.info("router found", extra={"service": name, "urls": urls})
            self._found[name] = urls
            for url in urls:
                self._failed.pop(url, None)
            self.changed.set()

    def remove(self, name: str) -> None:
        urls = self._found.pop(name, None)
        if urls is not None:
            log.info("router gone", extra={"service": name, "urls": urls})
            if self._current in urls:
                self._current = None
            self.changed.set()

    def urls(self) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(self._static)
        for urls in self._found.values():
            seen.update(dict.fromkeys(urls))
        return list(seen)

    def candidates(self) -> list[str]:
        """Every known router, best first: the current one, then by fewest recent failures."""
        known = self.urls()
        order = {url: i for i, url in enumerate(known)}
        return sorted(known, key=lambda u: (u != self._current, self._failed.get(u, 0), order[u]))

    @property
    def current(self) -> str | None:
        return self._current

    def succeeded(self, url: str) -> None:
        if url != self._current:
            log.info("posting heartbeats to %s", url, extra={"router": url})
        self._current = url
        self._failed.pop(url, None)

    def failed(self, url: str) -> None:
        self._failed[url] = self._failed.get(url, 0) + 1
        if url == self._current:
            self._current = None


class Discovery:
    """Keeps browsing `_fleet-manager._tcp.local.` and feeds a RouterDirectory."""

    def __init__(self, directory: RouterDirectory, interfaces: Sequence[str] = (),
                 fleet_name: str = "") -> None:
        self._directory = directory
        self._fleet = fleet_name
        self._interfaces = list(interfaces)
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        ip_version = IPVersion.V4Only if self._interfaces else IPVersion.All
        self._aiozc = AsyncZeroconf(
            interfaces=mdns_interfaces(self._interfaces), ip_version=ip_version)
        # QM: a multicast answer; a unicast one can be swallowed by another mDNS responder
        # on this host, which made discovery take seconds instead of ~0.2 s.
        self._browser = AsyncServiceBrowser(
            self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change],
            question_type=DNSQuestionType.QM)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        if self._aiozc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._aiozc.async_close(), 3.0)

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._directory.remove(name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        try:
            if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
                log.warning("router did not resolve", extra={"service": name})
                return
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop browsing
            log.warning("router resolve failed", extra={"service": name, "error": repr(exc)})
            return
        fleet = (info.properties.get(b"fleet") or b"").decode("utf-8", "replace")
        if fleet != self._fleet:  # another fleet's router on the same LAN
            log.debug("router of another fleet ignored", extra={"service": name, "fleet": fleet})
            self._directory.remove(name)
            return
        addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
        if self._interfaces:  # prefer the addresses we were told to use
            inside = [a for a in addresses if a in self._interfaces]
            addresses = inside + [a for a in addresses if a not in inside]
        if info.port and addresses:
            self._directory.add(name, [_url(a, info.port) for a in addresses])
