"""Reading and parsing an inference request: the body once, its model, nothing more.

Plain functions over ASGI messages, so each rule (size limit, JSON object, a model) is
testable without a server.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, cast

import multipart
from litestar.types import Receive, Scope

from services.router.proxy.apis import DIALECTS, Api
from shared.bodies import decode_json
from shared.errors import BadRequest, HerdError, PayloadTooLarge
from shared.models import normalize_model, valid_model_name
from shared.routing import RouteRequest

__all__ = [
    "ENDPOINTS",
    "Api",
    "MethodNotAllowed",
    "form_fields",
    "header_map",
    "parse_request",
    "read_body",
    "replace_form_field",
]

# path -> (API, endpoint name), from the dialects (proxy/apis.py)
ENDPOINTS: dict[str, tuple[Api, str]] = {
    path: (dialect.api, dialect.endpoint) for path, dialect in DIALECTS.items()}


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
    dialect = DIALECTS[path]
    body = form_fields(raw, headers) if dialect.form else decode_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise BadRequest("model is required")
    if not isinstance(model, str):
        raise BadRequest("model must be a string")
    if not valid_model_name(model.strip()):  # before it reaches a node, a header or a key
        raise BadRequest("model is not a valid model name")
    return RouteRequest(
        app=app,
        tags=[app] if app else [],
        request_id=os.urandom(16).hex(),  # uuid4().hex's shape at half the cost
        api=dialect.api,
        endpoint=dialect.endpoint,
        path=path,
        fixed_body=dialect.fixed_body,
        model=normalize_model(model),
        body=body,
        raw=raw,
        headers=headers,
        client_ip=client_ip,
    )


def form_fields(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The text fields of a multipart form (files left out), or BadRequest as Ollama words
    it: its audio endpoint reads the model from the form's `model` field."""
    kind, options = multipart.parse_options_header(headers.get("content-type", ""))
    boundary = options.get("boundary", "")
    if kind != "multipart/form-data" or not boundary:
        raise BadRequest("failed to parse multipart form: request Content-Type isn't "
                         "multipart/form-data")
    limit = len(raw) + 1  # already within the body limit: keep every part in memory
    parser = multipart.MultipartParser(io.BytesIO(raw), boundary, content_length=len(raw),
                                       spool_limit=limit, memory_limit=limit, disk_limit=0)
    fields: dict[str, Any] = {}
    try:
        for part in parser:
            if part.filename is None and part.name not in fields:
                fields[part.name] = part.value
    except multipart.MultipartError as exc:
        raise BadRequest(f"failed to parse multipart form: {exc}") from None
    return fields


def replace_form_field(raw: bytes, headers: Mapping[str, str], name: str, old: str,
                       new: str) -> bytes:
    """`raw` with the value of its text field `name` changed from `old` to `new`, every
    other byte as the client sent it (a model alias on a multipart request)."""
    _, options = multipart.parse_options_header(headers.get("content-type", ""))
    boundary = options.get("boundary", "").encode()
    head = raw.find(b'name="' + name.encode() + b'"')
    if head < 0 or not boundary:
        raise BadRequest(f"failed to parse multipart form: no {name} field")
    value = b"\r\n\r\n" + old.encode() + b"\r\n--" + boundary
    at = raw.find(value, head)
    if at < 0:
        raise BadRequest(f"failed to parse multipart form: unreadable {name} field")
    start = at + 4
    return raw[:start] + new.encode() + raw[start + len(old.encode()):]
