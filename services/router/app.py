"""Builds the router's Litestar app: routes, error shapes, and the replica's lifecycle."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from litestar import Litestar
from litestar.datastructures import State

from services.router import meta
from services.router.context import RouterContext
from services.router.errors import EXCEPTION_HANDLERS
from shared.redisconn import connect
from shared.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("herd.router")

# Background parts of a replica: each starts with the app and stops (in reverse) with it.
Lifecycle = Callable[[RouterContext], contextlib.AbstractAsyncContextManager[None]]
LIFECYCLES: list[Lifecycle] = []


def create_app(settings: Settings, redis_url: str) -> Litestar:
    """The app for one replica; Redis is connected in the lifespan, not at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(redis_url)
        await redis.ping()
        ctx = RouterContext.create(settings, redis)
        app.state.herd = ctx
        async with contextlib.AsyncExitStack() as stack:
            for part in LIFECYCLES:
                await stack.enter_async_context(part(ctx))
            log.info("router ready", extra={"replica": ctx.replica_id})
            try:
                yield
            finally:
                log.info("router stopping", extra={"replica": ctx.replica_id})
        await redis.aclose()

    return Litestar(
        route_handlers=[*meta.ROUTES],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({}),
        request_max_body_size=int(settings.max_body_mb * 1024 * 1024),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


