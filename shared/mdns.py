"""mDNS for the fleet: routers advertise `_fleet-manager._tcp.local.`; node agents browse it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Sequence

from zeroconf import InterfaceChoice, IPVersion
from zeroconf._utils.net import get_all_addresses  # public name, not re-exported for mypy
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from shared.background import background
from shared.settings import Settings
from shared.version import VERSION

__all__ = ["SERVICE_TYPE", "advertise", "advertised_addresses", "mdns_interfaces"]

log = logging.getLogger("herd.mdns")

SERVICE_TYPE = "_fleet-manager._tcp.local."
_WILDCARDS = {"", "0.0.0.0", "::"}


def mdns_interfaces(addresses: Sequence[str]) -> list[str] | InterfaceChoice:
    """zeroconf's `interfaces` argument: the given addresses, or every interface."""
    return list(addresses) if addresses else InterfaceChoice.All


def advertised_addresses(host: str, interfaces: Sequence[str]) -> list[str]:
    """The IPv4 addresses agents should post to.

    A router bound to one address advertises that one; otherwise the mDNS interfaces'
    addresses, or every non-loopback address (loopback only if the machine has nothing else).
    """
    if host not in _WILDCARDS:
        return [host]
    if interfaces:
        return [a for a in interfaces if ipaddress.ip_address(a).version == 4] or list(interfaces)
    everything = get_all_addresses()
    outside = [a for a in everything if not ipaddress.ip_address(a).is_loopback]
    return outside or everything or ["127.0.0.1"]


def _service_info(s: Settings, replica_id: str) -> AsyncServiceInfo:
    name = f"herd-{socket.gethostname()}-{replica_id}"[:63]
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        port=s.port,
        parsed_addresses=advertised_addresses(s.host, s.mdns_interfaces),
        properties={"version": VERSION, "port": str(s.port), "replica": replica_id,
                    "fleet": s.fleet_name},
        server=f"{name}.local.",
    )


@contextlib.asynccontextmanager
async def advertise(settings: Settings, replica_id: str) -> AsyncIterator[None]:
    """Advertise a router replica while the block runs: registered in the background
    (probing blocks ~1.6 s), unregistered at its end."""
    if not settings.mdns_enabled:
        yield
        return
    ip_version = IPVersion.V4Only if settings.mdns_interfaces else IPVersion.All
    try:
        aiozc = AsyncZeroconf(
            interfaces=mdns_interfaces(settings.mdns_interfaces), ip_version=ip_version)
    except OSError as exc:  # no usable interface: the router still serves
        log.warning("mDNS unavailable, not advertising", extra={"error": str(exc)})
        yield
        return
    info = _service_info(settings, replica_id)
    registered = asyncio.Event()

    async def register() -> None:
        try:
            await (await aiozc.async_register_service(info, allow_name_change=True))
            registered.set()
            log.info("advertised over mDNS", extra={"service": info.name,
                                                    "addresses": info.parsed_addresses()})
        except Exception as exc:  # noqa: BLE001 - advertising is optional; serving is not
            log.warning("mDNS registration failed", extra={"error": repr(exc)})

    try:
        async with background(register(), "herd-mdns-register"):
            yield
    finally:
        with contextlib.suppress(Exception):
            if registered.is_set():
                await asyncio.wait_for(aiozc.async_unregister_service(info), 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(aiozc.async_close(), 3.0)
