"""Builds the router's Litestar app: routes, error shapes, and the replica's lifecycle."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from services.router import inference, meta
from services.router.benchmark_runs import ROUTES as BENCHMARK_ROUTES
from services.router.benchmark_runs import benchmark_lifecycle
from services.router.catalog import ROUTES as CATALOG_ROUTES
from services.router.context import RouterContext
from services.router.dashboard_link import ROUTES as DASHBOARD_LINK_ROUTES
from services.router.errors import EXCEPTION_HANDLERS
from services.router.events_api import ROUTES as EVENTS_ROUTES
from services.router.fleet_api import ROUTES as FLEET_ROUTES
from services.router.health_api import ROUTES as HEALTH_ROUTES
from services.router.inference import ROUTES as INFERENCE_ROUTES
from services.router.leader import leader_lifecycle
from services.router.mdns import mdns_lifecycle
from services.router.metrics import ROUTES as METRICS_ROUTES
from services.router.models_api import ROUTES as MODELS_ROUTES
from services.router.proxy import proxy_lifecycle
from services.router.registry import fleet_lifecycle
from services.router.routing import routing_lifecycle
from services.router.settings_api import ROUTES as SETTINGS_ROUTES
from services.router.settings_api import runtime_settings_lifecycle
from services.router.slots import slots_lifecycle
from services.router.stats import stats_lifecycle
from services.router.usage_api import ROUTES as USAGE_ROUTES
from shared.fastredis import FastRedis
from shared.redisconn import connect
from shared.settings import Settings

__all__ = ["create_app", "with_fast_paths"]

log = logging.getLogger("herd.router")

# Background parts of a replica: each starts with the app and stops (in reverse) with it.
Lifecycle = Callable[[RouterContext], contextlib.AbstractAsyncContextManager[None]]
LIFECYCLES: list[Lifecycle] = [
    runtime_settings_lifecycle,  # before all: parts start with the stored overrides
    fleet_lifecycle,  # first: others read the fleet snapshot as they start
    slots_lifecycle,  # before any request can wait for a slot
    routing_lifecycle,  # plugins collected once; scoring inputs kept fresh
    stats_lifecycle,  # usage counted in process, written once a second
    proxy_lifecycle,  # the pooled connections to the nodes
    leader_lifecycle,  # fleet-wide jobs (reaper, recorder) on one replica at a time
    mdns_lifecycle,
    benchmark_lifecycle,  # stops this replica's benchmark runs first on shutdown
]


def create_app(settings: Settings, redis_url: str) -> Litestar:
    """The app for one replica; Redis is connected in the lifespan, not at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(redis_url, timeout=settings.redis_timeout)
        await redis.ping()
        fast = FastRedis(redis_url, reply_timeout=settings.redis_timeout)
        ctx = RouterContext.create(settings, redis, fast)
        app.state.herd = ctx
        async with contextlib.AsyncExitStack() as stack:
            for part in LIFECYCLES:
                await stack.enter_async_context(part(ctx))
            log.info("router ready", extra={"replica": ctx.replica_id})
            try:
                yield
            finally:
                log.info("router stopping", extra={"replica": ctx.replica_id})
        await fast.close()
        await redis.aclose()

    return Litestar(
        route_handlers=[
            *meta.ROUTES, *FLEET_ROUTES, *DASHBOARD_LINK_ROUTES,
            *HEALTH_ROUTES, *METRICS_ROUTES, *SETTINGS_ROUTES, *MODELS_ROUTES,
            *USAGE_ROUTES, *EVENTS_ROUTES, *BENCHMARK_ROUTES,
            *INFERENCE_ROUTES, *CATALOG_ROUTES,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({}),
        request_max_body_size=int(settings.max_body_mb * 1024 * 1024),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


def with_fast_paths(app: Litestar) -> ASGIApp:
    """The served ASGI app: inference paths go straight to their handler, the rest to `app`.

    The same handlers are routes of `app` too (in-process tests reach them that way); in
    front of it they skip Litestar's router and middleware, a measurable share of the
    per-request budget.
    """
    endpoints = inference.ENDPOINTS

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] in endpoints:
            scope["app"] = app
            await inference.handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return serve
