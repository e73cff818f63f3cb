"""The little the request path reads of a node's answer: whether it streams, and its final
chunk's counts and timings; and the well-formed ending of a stream that broke."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from services.router.nodeclient import NodeResponse
from shared.errors import error_body, is_anthropic_path

__all__ = [
    "STREAM_TYPES",
    "TAIL_BYTES",
    "Usage",
    "content_type",
    "error_tail",
    "is_stream",
    "parse_final",
]

# A response of these types is passed through chunk by chunk; anything else is one body.
# Audio (/v1/audio/speech) is sent as the node produces it.
STREAM_TYPES = ("application/x-ndjson", "text/event-stream", "audio/")
TAIL_BYTES = 16 * 1024  # enough for a final chunk; long answers keep only their end


@dataclass(slots=True)
class Usage:
    """What the router learns from a response's final chunk."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    load_ms: float = 0.0
    prompt_eval_ms: float = 0.0
    tokens_per_s: float = 0.0


class _OpenAIChoice(msgspec.Struct):
    finish_reason: str | None = None


class _OpenAIUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # OpenAI Responses' and Anthropic Messages' names
    input_tokens: int = 0
    output_tokens: int = 0


class _Final(msgspec.Struct):
    # Ollama's fields, then OpenAI's; unknown fields (the text, the vectors) are skipped
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    choices: list[_OpenAIChoice] | None = None
    usage: _OpenAIUsage | None = None
    stop_reason: str | None = None  # Anthropic Messages


_final_decoder = msgspec.json.Decoder(_Final)


def _last_json(tail: bytes, sse: bool) -> bytes:
    """The last JSON object in a stream's tail: NDJSON's last line, or SSE's last data."""
    for raw_line in reversed(tail.split(b"\n")):
        line = raw_line.strip()
        if sse:
            if not line.startswith(b"data:"):
                continue
            line = line[5:].strip()
            if line == b"[DONE]":
                continue
        if line.startswith(b"{"):
            return line
    return b""


def parse_final(data: bytes, *, stream: bool, sse: bool = False) -> Usage:
    """Counts and timings from a whole body, or from a stream's tail; zeros if unreadable."""
    raw = _last_json(data, sse) if stream else data
    usage = Usage()
    if not raw:
        return usage
    try:
        final = _final_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return usage
    usage.prompt_tokens = final.prompt_eval_count
    usage.completion_tokens = final.eval_count
    usage.finish_reason = final.done_reason or ""
    usage.load_ms = final.load_duration / 1e6
    usage.prompt_eval_ms = final.prompt_eval_duration / 1e6
    if final.eval_count and final.eval_duration:
        usage.tokens_per_s = final.eval_count / (final.eval_duration / 1e9)
    if final.usage is not None:
        usage.prompt_tokens = final.usage.prompt_tokens or final.usage.input_tokens
        usage.completion_tokens = final.usage.completion_tokens or final.usage.output_tokens
    if final.stop_reason:
        usage.finish_reason = final.stop_reason
    if final.choices and final.choices[0].finish_reason:
        usage.finish_reason = final.choices[0].finish_reason
    return usage


def error_tail(path: str, message: str, sse: bool) -> bytes:
    """A well-formed last message for a stream that broke after its first byte."""
    body = msgspec.json.encode(error_body(path, 502, message))
    if sse:
        # Anthropic's streams name each event; its SDKs raise on `event: error`
        event = b"event: error\n" if is_anthropic_path(path) else b""
        return event + b"data: " + body + b"\n\n"
    return body + b"\n"


def content_type(response: NodeResponse) -> str:
    return response.headers.get("content-type", "application/json")


def is_stream(ctype: str) -> bool:
    return ctype.startswith(STREAM_TYPES)
