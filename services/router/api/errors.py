"""Renders every error the router raises in the shape of the API that was called."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from shared.errors import HerdError, StateUnavailable, error_body
from shared.redisconn import REDIS_UNAVAILABLE

__all__ = ["EXCEPTION_HANDLERS"]

log = logging.getLogger("herd.router")


def _herd_error(request: Request[Any, Any, Any], exc: HerdError) -> Response[object]:
    return Response(
        error_body(request.url.path, exc.status_code, exc.message, exc),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    message = exc.detail or "error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"path {request.url.path} not found"
    return Response(
        error_body(request.url.path, exc.status_code, message),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


def _redis_error(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if not isinstance(exc, REDIS_UNAVAILABLE):
        return _internal_error(request, exc)
    log.warning("Redis unreachable", extra={"path": request.url.path, "error": str(exc)})
    return _herd_error(request, StateUnavailable())


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    log.exception("unhandled error", extra={"path": request.url.path})
    return Response(
        error_body(request.url.path, 500, f"internal error: {type(exc).__name__}"),
        status_code=500,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HerdError: _herd_error,
    HTTPException: _http_error,
    RedisError: _redis_error,  # the fleet and dashboard endpoints, while Redis is away
    Exception: _internal_error,
}
