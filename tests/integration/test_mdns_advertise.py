"""The router's mDNS advertisement: in the background, with its TXT record, withdrawn on stop."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from services.router.context import RouterContext
from shared.mdns import SERVICE_TYPE, advertise
from shared.settings import Settings
from shared.version import VERSION


async def test_advertises_without_delaying_startup_and_withdraws(
    settings: Settings, redis: Redis,
) -> None:
    fleet = f"t-{uuid.uuid4().hex[:8]}"
    ctx = RouterContext.create(settings.replace(
        mdns_enabled=True, mdns_interfaces="127.0.0.1", port=45123, fleet_name=fleet), redis)
    browser_zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    found: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if ctx.replica_id in name:  # other tests' routers may advertise on 127.0.0.1 too
            found.put_nowait((name, state_change))

    browser = AsyncServiceBrowser(browser_zc.zeroconf, SERVICE_TYPE, handlers=[on_change],
                                  question_type=DNSQuestionType.QM)
    try:
        started = time.monotonic()
        async with advertise(ctx.settings, ctx.replica_id):
            # Probing takes ~1.6 s; it must not hold up the app's startup.
            assert time.monotonic() - started < 0.5
            name, change = await asyncio.wait_for(found.get(), 10.0)
            assert change in (ServiceStateChange.Added, ServiceStateChange.Updated)
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            assert await info.async_request(browser_zc.zeroconf, 3000)
            assert info.port == 45123
            assert info.parsed_addresses() == ["127.0.0.1"]
            txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            assert txt == {"version": VERSION, "port": "45123", "replica": ctx.replica_id,
                           "fleet": fleet}
        while True:  # a goodbye on shutdown: browsers drop it without waiting for a TTL
            _name, change = await asyncio.wait_for(found.get(), 5.0)
            if change is ServiceStateChange.Removed:
                break
    finally:
        await browser.async_cancel()
        await browser_zc.async_close()


async def test_disabled_does_nothing(settings: Settings, redis: Redis) -> None:
    ctx = RouterContext.create(settings, redis)  # the fixture turns mDNS off
    started = time.monotonic()
    async with advertise(ctx.settings, ctx.replica_id):
        pass
    assert time.monotonic() - started < 0.1
