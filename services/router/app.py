"""Builds the router's Litestar app: routes, error shapes, and the replica's lifecycle."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from services.router.api import (
    benchmarks,
    catalog,
    client_keys,
    dashboard_link,
    events,
    fleet,
    health,
    manage,
    meta,
    metrics,
    models,
    pins,
    usage,
)
from services.router.api import settings as settings_api
from services.router.api.auth import LOOPBACK_ONLY
from services.router.api.errors import EXCEPTION_HANDLERS
from services.router.context import RouterContext
from services.router.openapi import openapi_config
from services.router.proxy import count_tokens, exchange
from services.router.telemetry import tracing
from shared.background import started
from shared.fastcluster import fast_redis
from shared.mdns import advertise
from shared.redisconn import connect
from shared.settings import Settings

__all__ = ["create_app", "with_fast_paths"]

log = logging.getLogger("herd.router")

@contextlib.asynccontextmanager
async def running(ctx: RouterContext) -> AsyncIterator[None]:
    """Each part's background work, started in order before the app serves, stopped in
    reverse when it ends."""
    async with contextlib.AsyncExitStack() as stack:
        ctx.tracing = await stack.enter_async_context(tracing(ctx.settings, ctx.replica_id))
        await stack.enter_async_context(ctx.runtime.running())  # parts start with overrides
        await stack.enter_async_context(ctx.client_keys.running())  # before inference
        await stack.enter_async_context(ctx.fleet.running())  # others read its snapshot
        await stack.enter_async_context(started(ctx.slots))  # before a request can wait
        await stack.enter_async_context(ctx.ends.running())  # writes what Redis missed
        await stack.enter_async_context(ctx.routing.running(ctx, ctx.fleet))
        await stack.enter_async_context(ctx.stats.running())  # usage written once a second
        stack.callback(ctx.nodes.close)
        await stack.enter_async_context(started(ctx.leader))  # reaper, recorder: one replica
        await stack.enter_async_context(advertise(ctx.settings, ctx.replica_id))
        stack.push_async_callback(ctx.benchmarks.stop)  # this replica's benchmark runs stop first
        yield


def create_app(settings: Settings, redis_url: str) -> Litestar:
    """The app for one replica; Redis is connected in the lifespan, not at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(redis_url, timeout=settings.redis_timeout,
                        key_prefix=settings.redis_prefix)
        await redis.ping()
        fast = fast_redis(redis_url, reply_timeout=settings.redis_timeout,
                          key_prefix=settings.redis_prefix)
        ctx = RouterContext.create(settings, redis, fast)
        ctx.redis_url = redis_url
        app.state.herd = ctx
        async with running(ctx):
            log.info("router ready", extra={"replica": ctx.replica_id})
            if not settings.admin_token:
                log.warning(LOOPBACK_ONLY)
            try:
                yield
            finally:
                log.info("router stopping", extra={"replica": ctx.replica_id})
        await fast.close()
        await redis.aclose()

    return Litestar(
        route_handlers=[
            *meta.ROUTES, *fleet.ROUTES, *dashboard_link.ROUTES,
            *health.ROUTES, *metrics.ROUTES, *settings_api.ROUTES, *models.ROUTES,
            *usage.ROUTES, *events.ROUTES, *benchmarks.ROUTES, *client_keys.ROUTES,
            *exchange.ROUTES, *count_tokens.ROUTES, *catalog.ROUTES, *manage.ROUTES,
            *pins.ROUTES,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({}),
        request_max_body_size=int(settings.max_body_mb * 1024 * 1024),
        openapi_config=openapi_config(),
        logging_config=None,
        debug=False,
    )


def with_fast_paths(app: Litestar) -> ASGIApp:
    """The served ASGI app: inference paths go straight to their handler, the rest to `app`.

    The same handlers are routes of `app` too (in-process tests reach them that way); in
    front of it they skip Litestar's router and middleware, a measurable share of the
    per-request budget.
    """
    endpoints = exchange.ENDPOINTS

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] in endpoints:
            scope["app"] = app
            await exchange.handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return serve
