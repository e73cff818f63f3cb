"""The router's OpenAPI document: Litestar's, completed with the paths Litestar cannot see.

Litestar describes every route handler from its signature and return type (the structs in
`shared/schemas.py`). Two kinds of path escape it, and are added here from the same structs
(and a `{model:path}` parameter, a model name, loses the `uri` format Litestar gives it):

- the inference paths (`/api/chat`, `/v1/chat/completions`, ...), plain ASGI handlers that
  skip Litestar's routing for speed;
- the request bodies of handlers that read their body raw, so that a bad one gets an error
  in the API's own shape instead of Litestar's.

The document is served at /schema/openapi.json (and at /schema).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Tag

from services.router.proxy.request import ENDPOINTS
from shared import schemas
from shared.errors import is_anthropic_path
from shared.version import VERSION

__all__ = ["COUNT_TOKENS", "INFERENCE", "OPENAPI_PATH", "RAW_BODIES", "complete", "openapi_config"]

OPENAPI_PATH = "/schema"

# path -> (request struct, summary); the ASGI handlers answer POST only (405 otherwise).
INFERENCE: dict[str, tuple[type[msgspec.Struct], str]] = {
    "/api/chat": (schemas.ChatRequest, "Ollama chat, routed to the best node"),
    "/api/generate": (schemas.GenerateRequest, "Ollama generate, routed to the best node"),
    "/api/embed": (schemas.EmbedRequest, "Ollama embeddings, routed to the best node"),
    "/api/embeddings": (schemas.EmbeddingsRequest, "Ollama's older embeddings endpoint"),
    "/v1/chat/completions": (schemas.OpenAIChatRequest, "OpenAI chat completions"),
    "/v1/completions": (schemas.OpenAICompletionRequest, "OpenAI completions"),
    "/v1/embeddings": (schemas.OpenAIEmbeddingsRequest, "OpenAI embeddings"),
    "/v1/responses": (schemas.ResponsesRequest, "OpenAI Responses (Codex, the Agents SDK)"),
    "/v1/messages": (schemas.AnthropicMessagesRequest,
                     "Anthropic Messages (Claude Code, the anthropic SDKs)"),
    "/v1/audio/transcriptions": (schemas.TranscriptionForm, "OpenAI audio transcription"),
    "/v1/audio/speech": (schemas.SpeechRequest, "OpenAI text to speech, audio streamed back"),
}
# bodies that are not JSON
_FORMS = {"/v1/audio/transcriptions"}

# (path, method) -> the body of a handler that reads it raw
RAW_BODIES: dict[tuple[str, str], type[msgspec.Struct] | None] = {
    ("/api/pull", "post"): schemas.PullRequest,
    ("/dashboard/api/pull", "post"): schemas.PullRequest,
    ("/dashboard/api/delete", "post"): schemas.PullRequest,
    ("/dashboard/api/benchmarks", "post"): schemas.BenchmarkStart,
    ("/dashboard/api/benchmarks/runs", "post"): schemas.BenchmarkRun,
    ("/api/delete", "delete"): schemas.DeleteRequest,
    ("/fleet/pins", "post"): schemas.PinRequest,
    ("/api/copy", "post"): schemas.CopyRequest,
    ("/api/create", "post"): schemas.CreateRequest,
    ("/api/push", "post"): schemas.PushRequest,
    ("/api/show", "post"): None,  # {"model": ...}, forwarded to a node as sent
    ("/dashboard/api/settings", "post"): None,  # a partial object of runtime settings
    ("/heartbeat", "post"): None,  # Herd's or ollama-herd's payload (COMPAT.md)
}
_FREE_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}

_ERRORS = {
    400: "The body is not JSON, or a field is wrong; the error says which. Also a "
         "request that fits on no node's memory (the model with its num_ctx), a node's own "
         "4xx, passed on as it sent it, and a node's refusal of the request itself (an "
         "option of the wrong type, a model that does not fit with that num_ctx) in the "
         "node's words.",
    401: "A client token is set and the request does not carry it.",
    404: "No node has the model (and auto_pull is off or it does not exist).",
    405: "Only POST.",
    413: "The body is larger than the router accepts.",
    502: "Every node tried failed before answering (after the retries).",
    503: "No node can serve the model now: all busy past the queue timeout, or none online.",
    504: "The node did not answer in time.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict[str, Any]:
    """JSON Schema of the structs only this module describes, keyed by struct name."""
    kinds: list[type[msgspec.Struct]] = [kind for kind, _ in INFERENCE.values()]
    kinds += [k for k in RAW_BODIES.values() if k is not None]
    kinds += [schemas.ErrorAnswer, schemas.OpenAIErrorAnswer, schemas.AnthropicErrorAnswer,
              schemas.CountTokensAnswer]
    _, found = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    return found


def _inference_operation(path: str, kind: type[msgspec.Struct], summary: str) -> dict[str, Any]:
    openai = path.startswith("/v1/")
    anthropic = is_anthropic_path(path)
    error = _ref("AnthropicErrorAnswer" if anthropic else
                 "OpenAIErrorAnswer" if openai else "ErrorAnswer")
    streamed = "text/event-stream" if openai else "application/x-ndjson"
    if path == "/v1/audio/speech":
        streamed = "audio/wav"
    answer = {"schema": dict(_FREE_OBJECT)}
    body_type = "multipart/form-data" if path in _FORMS else "application/json"
    return {
        "post": {
            "tags": ["anthropic" if anthropic else "openai" if openai else "ollama"],
            "summary": summary,
            "description": (
                "The body reaches the chosen node unchanged: fields not named here are "
                "forwarded too. The answer is the node's, as sent; with `stream` it arrives "
                f"as {streamed}. Responses carry X-Fleet-Node, X-Fleet-Retries, "
                "X-Fleet-Score, X-Fleet-Requested-Model and X-Fleet-Served-Model; a request "
                "may carry X-Herd-Tags."),
            "operationId": "Infer" + "".join(
                part.title() for part in path.strip("/").replace("/", "_").split("_")),
            "requestBody": {"required": True, "content": {
                body_type: {"schema": _ref(kind.__name__)}}},
            "responses": {
                "200": {"description": "The node's answer.", "content": {
                    "application/json": answer, streamed: answer}},
                **{str(code): {"description": text,
                               "content": {"application/json": {"schema": error}}}
                   for code, text in _ERRORS.items()},
            },
        },
    }


COUNT_TOKENS = "/v1/messages/count_tokens"


def _count_tokens_operation() -> dict[str, Any]:
    """The router's own answer to Anthropic's token counting (docs/api.md)."""
    error = {"application/json": {"schema": _ref("AnthropicErrorAnswer")}}
    return {"post": {
        "tags": ["anthropic"],
        "summary": "Anthropic token counting, answered by the router (an estimate)",
        "description": "The body of /v1/messages without max_tokens. The count is the "
                       "characters of the input divided by 4, as Ollama estimates "
                       "message_start's input_tokens; no node is asked.",
        "operationId": "CountTokens",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("AnthropicMessagesRequest")}}},
        "responses": {
            "200": {"description": "The estimate.", "content": {
                "application/json": {"schema": _ref("CountTokensAnswer")}}},
            **{str(code): {"description": _ERRORS[code], "content": error}
               for code in (400, 401, 404, 405, 413)},
        },
    }}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Litestar's document plus the inference paths and the raw bodies (a new dict)."""
    out = copy.deepcopy(document)
    found = out.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _components().items():
        found.setdefault(name, schema)
    paths = out.setdefault("paths", {})
    for item in paths.values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                # a `{name:path}` parameter is a model name with slashes, not a URI
                if parameter.get("in") == "path":
                    parameter.get("schema", {}).pop("format", None)
    for path in ENDPOINTS:
        kind, summary = INFERENCE[path]
        paths[path] = _inference_operation(path, kind, summary)
    for (path, method), body in RAW_BODIES.items():
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            schema = _ref(body.__name__) if body is not None else dict(_FREE_OBJECT)
            operation["requestBody"] = {
                "required": body is None,
                "content": {"application/json": {"schema": schema}},
            }
    paths[COUNT_TOKENS] = _count_tokens_operation()
    upload = paths.get("/api/blobs/{digest}", {}).get("post")
    if upload is not None:  # streamed to the node as it arrives, any size
        upload["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    return out


class _Completed(JsonRenderPlugin):
    """Serves `complete(...)` of Litestar's document, built once per app."""

    def __init__(self) -> None:
        super().__init__(path="/openapi.json")
        self._cache: tuple[int, dict[str, Any]] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._cache is None or self._cache[0] != id(openapi_schema):
            self._cache = (id(openapi_schema), complete(openapi_schema))
        return self.render_json(request, self._cache[1])


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Herd",
        version=VERSION,
        description=(
            "A load balancer for Ollama fleets. Ollama's and OpenAI's APIs are routed to the "
            "best node; the fleet, dashboard, settings and model endpoints are Herd's own. "
            "Errors are Ollama's `{\"error\": ...}`, Anthropic's error object on "
            "/v1/messages, or OpenAI's on the rest of /v1/."),
        path=OPENAPI_PATH,
        render_plugins=[_Completed()],
        tags=[Tag(name=name) for name in (
            "ollama", "openai", "anthropic", "fleet", "dashboard", "models", "settings", "keys",
            "benchmarks", "router")],
    )
