"""Renders every error the router raises in the shape of the API that was called."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from shared.errors import HerdError, StateUnavailable, error_body
from shared.redisconn import REDIS_UNAVAILABLE
from shared.schemas import ErrorAnswer, OpenAIErrorAnswer

__all__ = ["ERROR_RESPONSES", "EXCEPTION_HANDLERS", "OPENAI_ERROR_RESPONSES", "error_responses"]

_MEANINGS = {
    400: "The request is malformed; the error names what is wrong.",
    401: "A token is required (admin for changes, node for heartbeats).",
    403: "Without an admin token set, changes are accepted only from the router's machine.",
    404: "No such model, node or path.",
    409: "The change conflicts with the fleet's state (the error says which).",
    413: "The body is larger than the router accepts.",
    502: "The node failed to answer.",
    503: "No node can serve it now, or the fleet state (Redis) does not answer "
         "(X-Herd-State: unavailable); see Retry-After.",
    504: "The node did not answer in time.",
}


def error_responses(*codes: int, openai: bool = False) -> dict[int, ResponseSpec]:
    """The OpenAPI description of the errors a handler may answer, in its API's shape."""
    shape = OpenAIErrorAnswer if openai else ErrorAnswer
    return {code: ResponseSpec(shape, description=_MEANINGS.get(code, "An error."),
                               generate_examples=False)
            for code in codes}


# What most handlers may answer besides success: the common client and node errors.
ERROR_RESPONSES = error_responses(400, 401, 404, 502, 503)
OPENAI_ERROR_RESPONSES = error_responses(400, 404, 502, 503, openai=True)

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
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Litestar's own check of a query parameter: name the parameter and the rule.
        message = "; ".join(
            f"{item.get('key', '?')}: {item.get('message', 'invalid')}" if isinstance(item, dict)
            else str(item) for item in exc.extra)
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
