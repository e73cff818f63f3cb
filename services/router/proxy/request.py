"""Reading and parsing an inference request: the body once, its model, nothing more.

Plain functions over ASGI messages, so each rule (size limit, JSON object, a model) is
testable without a server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, cast

from litestar.types import Receive, Scope

from shared.bodies import decode_json
from shared.errors import BadRequest, HerdError, PayloadTooLarge
from shared.models import normalize_model, valid_model_name
from shared.routing import RouteRequest

__all__ = [
    "ENDPOINTS",
    "Api",
    "MethodNotAllowed",
    "header_map",
    "parse_request",
    "read_body",
]

Api = Literal["ollama", "openai"]

# path -> (API, endpoint name)
ENDPOINTS: dict[str, tuple[Api, str]] = {
    "/api/chat": ("ollama", "chat"),
    "/api/generate": ("ollama", "generate"),
    "/api/embed": ("ollama", "embed"),
    "/api/embeddings": ("ollama", "embeddings"),
    "/v1/chat/completions": ("openai", "chat"),
    "/v1/completions": ("openai", "completions"),
    "/v1/embeddings": ("openai", "embeddings"),
}


class MethodNotAllowed(HerdError):
    status_code = 405
    openai_type = "invalid_request_error"


def header_map(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, headers: Mapping[str, str], limit_mb: float) -> bytes | None:
    """The whole body, or None if the client left while sending it.

    PayloadTooLarge as soon as the declared or received size passes `limit_mb`.
    """
    limit = int(limit_mb * 1024 * 1024)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit_mb:g} MiB")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = cast(bytes, message.get("body", b""))
        if body:
            size += len(body)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit_mb:g} MiB")
            chunks.append(body)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_request(
    raw: bytes, path: str, headers: Mapping[str, str], client_ip: str, app: str = "",
) -> RouteRequest:
    """The body as a RouteRequest, or BadRequest saying what is wrong with it.

    `app` is the app of the client key the request came with: it is the request's first tag.
    """
    if not raw.strip():
        raise BadRequest("missing request body")
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise BadRequest("model is required")
    if not isinstance(model, str):
        raise BadRequest("model must be a string")
    if not valid_model_name(model.strip()):  # before it reaches a node, a header or a key
        raise BadRequest("model is not a valid model name")
    api, endpoint = ENDPOINTS[path]
    return RouteRequest(
        app=app,
        tags=[app] if app else [],
        request_id=os.urandom(16).hex(),  # uuid4().hex's shape at half the cost
        api=api,
        endpoint=endpoint,
        model=normalize_model(model),
        body=body,
        raw=raw,
        headers=headers,
        client_ip=client_ip,
    )
