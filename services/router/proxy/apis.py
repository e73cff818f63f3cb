"""The APIs the router forwards, each described once: how its body is read (JSON, or a
multipart form whose `model` field names the model), which request headers reach the node,
and where its answer keeps the token counts.

The router never translates between APIs: a request goes to a node that serves its path,
byte for byte (a model alias aside). What it reads of each is only what routing, traces
and usage need:

- Ollama (`/api/*`), JSON: the final chunk's `prompt_eval_count` and `eval_count`;
- OpenAI chat, completions, embeddings, JSON: `usage.prompt_tokens`, `completion_tokens`;
- OpenAI Responses (`/v1/responses`), JSON: `usage.input_tokens`, `output_tokens`, in a
  stream in the `response.completed` event;
- Anthropic Messages (`/v1/messages`), JSON: `usage.input_tokens`, `output_tokens`; in a
  stream `message_delta` (and `message_start` for the input);
- OpenAI audio: transcription a multipart form, speech JSON whose answer is audio,
  streamed as it comes; neither has counts.

proxy/counts.py reads the counts; the Relay (proxy/forward.py) and the exchange look the
dialect up by path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANTHROPIC_HEADERS",
    "DIALECTS",
    "Api",
    "Dialect",
    "credential",
    "forward_headers",
]

Api = Literal["ollama", "openai", "anthropic"]

# What the anthropic SDKs send beside the body; passed to the node as sent.
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True, slots=True)
class Dialect:
    """One inference path: its API, its endpoint's name, and how to read it."""

    api: Api
    endpoint: str  # "chat", "messages", "responses", ... (transforms read it)
    form: bool = False  # a multipart form: the model is its `model` field
    headers: tuple[str, ...] = ()  # request headers forwarded besides the content type
    # where a stream keeps its counts: "final" (the last chunk, Ollama's and OpenAI chat's),
    # or "usage" (the last `usage` object; the input count may be in the first event)
    counts: Literal["final", "usage"] = "final"
    # Ollama's layer for this API reads no `options` (num_ctx): the body stays as sent
    fixed_body: bool = False


# path -> its dialect; every path here is routed by the request path (proxy/exchange.py)
DIALECTS: dict[str, Dialect] = {
    "/api/chat": Dialect("ollama", "chat"),
    "/api/generate": Dialect("ollama", "generate"),
    "/api/embed": Dialect("ollama", "embed"),
    "/api/embeddings": Dialect("ollama", "embeddings"),
    "/v1/chat/completions": Dialect("openai", "chat"),
    "/v1/completions": Dialect("openai", "completions"),
    "/v1/embeddings": Dialect("openai", "embeddings"),
    "/v1/responses": Dialect("openai", "responses", counts="usage", fixed_body=True),
    "/v1/messages": Dialect("anthropic", "messages", headers=ANTHROPIC_HEADERS,
                            counts="usage", fixed_body=True),
    "/v1/audio/transcriptions": Dialect("openai", "transcriptions", form=True,
                                        fixed_body=True),
    "/v1/audio/speech": Dialect("openai", "speech", fixed_body=True),
}


def credential(headers: Mapping[str, str]) -> str:
    """The client's key as an Authorization value: `Authorization: Bearer <key>` as the
    OpenAI and Ollama clients send it, else Anthropic's `x-api-key: <key>` (the anthropic
    SDKs and Claude Code with ANTHROPIC_API_KEY; with ANTHROPIC_AUTH_TOKEN they send the
    former)."""
    authorization = headers.get("authorization", "")
    if authorization:
        return authorization
    key = headers.get("x-api-key", "").strip()
    return f"Bearer {key}" if key else ""


_JSON = b"application/json"


def forward_headers(dialect: Dialect, headers: Mapping[str, str]) -> tuple[bytes, bytes]:
    """The content type and further header lines sent to the node with the body: a form's
    own content type (its boundary), and the dialect's headers as the client sent them."""
    ctype = headers.get("content-type", "").encode("latin-1") if dialect.form else _JSON
    if not dialect.headers:
        return ctype, b""
    extra = b"".join(
        b"%s: %s\r\n" % (name.encode(), value.encode("latin-1"))
        for name in dialect.headers if (value := headers.get(name)))
    return ctype, extra
