"""POST /v1/messages/count_tokens, answered by the router: Ollama has no such endpoint.

Claude Code asks it to size its context. The answer is an estimate, never a node's count:
the same rule Ollama's own Anthropic layer uses for `message_start`'s input_tokens (the
characters of the system prompt, the messages' text and thinking, tool calls and results
as JSON, and the tools' names, descriptions and schemas, divided by four), so the two
counts Claude Code sees agree. Counting exactly would take a node's tokenizer, which
Ollama does not expose without evaluating the prompt (loading the model). Text in
English comes out within about a quarter of what Llama and Qwen tokenizers count; code
and other languages run higher.

The request is checked like an inference request: a client key (Authorization or
x-api-key, and its per-minute limits), the body limit, a model the fleet has (after the
`model_aliases`), errors in Anthropic's shape. It takes no slot and leaves no trace.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from litestar import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import HTTPScope, Receive, Scope, Send

from services.router.context import RouterContext
from services.router.proxy.aliases import resolve_alias
from services.router.proxy.apis import credential
from services.router.proxy.request import MethodNotAllowed, header_map, read_body
from shared.bodies import decode_json
from shared.errors import BadRequest, HerdError, ModelNotFound, error_body
from shared.models import normalize_model, valid_model_name

__all__ = ["PATH", "ROUTES", "estimate_tokens", "handle"]

PATH = "/v1/messages/count_tokens"

_encode = msgspec.json.Encoder().encode


def _text(value: Any) -> int:
    """Characters of a system prompt or tool result: a string, or text blocks."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(str(block.get("text") or "")) for block in value
                   if isinstance(block, dict) and block.get("type") == "text")
    return 0


def estimate_tokens(body: dict[str, Any]) -> int:
    """The input tokens of a Messages request, estimated as characters / 4 (see above)."""
    chars = _text(body.get("system"))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        chars += len(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            chars += len(str(block.get("text") or "")) + len(str(block.get("thinking") or ""))
            if block.get("type") in ("tool_use", "tool_result"):
                chars += len(_encode(block))
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            chars += len(str(tool.get("name", ""))) + len(str(tool.get("description", "")))
            if tool.get("input_schema"):
                chars += len(_encode(tool.get("input_schema")))
    tokens = chars // 4
    return 1 if tokens == 0 and (body.get("messages") or body.get("system")) else tokens


def _model(ctx: RouterContext, body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model: Field required")
    if not valid_model_name(model.strip()):
        raise BadRequest("model is not a valid model name")
    target = resolve_alias(ctx.settings.model_aliases, model) or model
    if normalize_model(target) not in ctx.fleet.snapshot().models():
        raise ModelNotFound(model)
    return target


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    await _count(cast(HTTPScope, scope), receive, send)


async def _count(scope: HTTPScope, receive: Receive, send: Send) -> None:
    ctx: RouterContext = scope["app"].state.herd
    status, headers = 200, {}
    try:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"method {scope['method']} not allowed on {PATH}")
        request_headers = header_map(scope)
        key = ctx.client_keys.authenticate(credential(request_headers))
        raw = await read_body(receive, request_headers, ctx.settings.max_body_mb)
        if raw is None:
            return  # the client left while sending
        await ctx.client_keys.admit(key)
        body = decode_json(raw) if raw.strip() else None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        _model(ctx, body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: Field required")
        answer: dict[str, Any] = {"input_tokens": estimate_tokens(body)}
    except HerdError as exc:
        status, headers = exc.status_code, exc.headers
        answer = error_body(PATH, exc.status_code, exc.message, exc)
    data = _encode(answer)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
    await send({"type": "http.response.body", "body": data, "more_body": False})


ROUTES: list[ASGIRouteHandler] = [asgi(PATH, copy_scope=False, name="count_tokens")(handle)]
