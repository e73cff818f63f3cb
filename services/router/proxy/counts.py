"""What the router reads of a node's answer: its token counts, finish reason and timings.

Ollama's API and OpenAI's chat keep them in the final chunk (`parse_final`); the agent APIs
(Anthropic Messages, OpenAI Responses) in a `usage` object that a stream sends near its end
(`read_usage`, by the answer's dialect: proxy/apis.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from services.router.proxy.apis import Dialect

__all__ = ["AnswerCounts", "parse_final", "read_usage"]


@dataclass(slots=True)
class AnswerCounts:
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


def parse_final(data: bytes, *, stream: bool, sse: bool = False) -> AnswerCounts:
    """Counts and timings from a whole body, or from a stream's tail; zeros if unreadable."""
    raw = _last_json(data, sse) if stream else data
    usage = AnswerCounts()
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


_INPUT = re.compile(rb'"input_tokens"\s*:\s*(\d+)')
_OUTPUT = re.compile(rb'"output_tokens"\s*:\s*(\d+)')
_INCOMPLETE = re.compile(rb'"incomplete_details"\s*:\s*\{')
_STOP = re.compile(rb'"stop_reason"\s*:\s*"([a-z_]{1,40})"')
# how far past `"usage":` its two counts may sit (Responses puts token details between)
_USAGE_SPAN = 1024


def _usage_counts(data: bytes) -> tuple[int | None, int | None]:
    """The counts of the last `"usage":` object in `data` (None where absent)."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return None, None
    span = data[at:at + _USAGE_SPAN]
    found_in, found_out = _INPUT.search(span), _OUTPUT.search(span)
    return (int(found_in.group(1)) if found_in else None,
            int(found_out.group(1)) if found_out else None)


def read_usage(dialect: Dialect, data: bytes, *, stream: bool, sse: bool,
               first: bytes = b"") -> AnswerCounts:
    """The counts of an answer: `data` is a whole body, or a stream's tail (its end, up to
    forward.TAIL_BYTES) with `first` its first read.

    Streams of the "usage" kind are read by pattern, not parsed: their last event that
    holds counts (`message_delta`, `response.completed`) can be longer than the tail (a
    Responses answer repeats the whole output and instructions), and the counts come
    after the text in both, so they are in the tail.
    """
    if not stream or dialect.counts == "final":
        return parse_final(data, stream=stream, sse=sse)
    usage = AnswerCounts()
    prompt, completion = _usage_counts(data)
    if prompt is None and first:  # Anthropic's message_start holds the input count
        prompt, _ = _usage_counts(first)
    usage.prompt_tokens = prompt or 0
    usage.completion_tokens = completion or 0
    stops = _STOP.findall(data)
    if stops:
        usage.finish_reason = stops[-1].decode()
    elif dialect.endpoint == "responses" and completion is not None:
        # the counts are in response.completed or response.incomplete, whose name may
        # be cut off with the start of a long event; the incomplete one says why
        incomplete = b"response.incomplete" in data or _INCOMPLETE.search(data)
        usage.finish_reason = "incomplete" if incomplete else "completed"
    return usage
