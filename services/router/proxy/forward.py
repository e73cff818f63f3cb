"""The relay: a node's answer passed to the client, whole or streamed as it arrives, and the
little the request path reads of it (its final chunk's counts and timings); the well-formed
ending of a stream that broke; the error answer of a request that got no node's answer.

A node's failure before the first byte reached the client raises UpstreamFailure (from the
reads of `nodes.NodeReply`) for the exchange to retry elsewhere; after it, the stream ends
with a well-formed error and the trace says incomplete.
"""

from __future__ import annotations

import time

import msgspec
from litestar.types import Send

from services.router.fleet.dispatch import Dispatch
from services.router.nodes import NodeReply, UpstreamFailure
from services.router.proxy.apis import DIALECTS
from services.router.proxy.counts import AnswerCounts, parse_final, read_usage
from shared.errors import HerdError, error_body, is_anthropic_path
from shared.models import Trace, TraceStatus

__all__ = [
    "STREAM_TYPES",
    "TAIL_BYTES",
    "AnswerCounts",
    "Relay",
    "error_tail",
    "header_value",
    "is_stream",
    "parse_final",
]

# A response of these types is passed through chunk by chunk; anything else is one body.
# Audio (/v1/audio/speech) is sent as the node produces it.
STREAM_TYPES = ("application/x-ndjson", "text/event-stream", "audio/")
TAIL_BYTES = 16 * 1024  # enough for a final chunk; long answers keep only their end


def error_tail(path: str, message: str, sse: bool) -> bytes:
    """A well-formed last message for a stream that broke after its first byte."""
    body = msgspec.json.encode(error_body(path, 502, message))
    if sse:
        # Anthropic's streams name each event; its SDKs raise on `event: error`
        event = b"event: error\n" if is_anthropic_path(path) else b""
        return event + b"data: " + body + b"\n\n"
    return body + b"\n"


def is_stream(ctype: str) -> bool:
    return ctype.startswith(STREAM_TYPES)


_encode = msgspec.json.Encoder().encode
_JSON = b"application/json"
# Control characters cannot go in a header value (the server refuses to send the response).
_CONTROLS = {code: "?" for code in (*range(9), *range(10, 32), 127)}


def header_value(text: str) -> bytes:
    """A client's text (a model name) made safe for a response header."""
    if text.isprintable():
        return text.encode()
    return text.translate(_CONTROLS).encode("utf-8", "replace")


def _apply(trace: Trace, usage: AnswerCounts) -> None:
    trace.prompt_tokens = usage.prompt_tokens
    trace.completion_tokens = usage.completion_tokens
    trace.finish_reason = usage.finish_reason
    trace.load_duration_ms = round(usage.load_ms, 2)
    trace.context_reload = trace.context_reload and usage.load_ms > 0


def _generating_ms(usage: AnswerCounts) -> float:
    if usage.tokens_per_s and usage.completion_tokens:
        return usage.completion_tokens / usage.tokens_per_s * 1000
    return 0.0


class Relay:
    """The client's side of one request's answer: what has been sent, and the sending."""

    __slots__ = ("finished", "path", "reply", "send", "started", "status")

    def __init__(self, send: Send, path: str) -> None:
        self.send, self.path = send, path
        self.reply: NodeReply | None = None  # the node's answer being relayed
        self.status = 0  # the response's status, once it starts
        self.started = False  # the response's first byte went out
        self.finished = False  # the response is complete: a disconnect now is normal

    def close(self) -> None:
        """Drop the node's answer (the node stops generating)."""
        if self.reply is not None:
            self.reply.close()

    async def answer(self, reply: NodeReply, dispatch: Dispatch) -> tuple[bool, float]:
        """Relay `reply` to the client and note it in the trace; returns whether it ended
        well (the slot's outcome) and the node's tokens per second."""
        self.reply = reply
        if is_stream(reply.content_type):
            return await self._stream(reply, dispatch)
        return await self._whole(reply, dispatch)

    async def _whole(self, reply: NodeReply, dispatch: Dispatch) -> tuple[bool, float]:
        data = await reply.read()
        trace = dispatch.trace
        assert trace is not None
        ok = reply.status < 400
        usage = read_usage(DIALECTS[self.path], data, stream=False, sse=False) if ok \
            else AnswerCounts()
        if ok:
            trace.status = TraceStatus.COMPLETED
            if usage.load_ms or usage.prompt_eval_ms:
                trace.time_to_first_token_ms = round(
                    (time.perf_counter() - dispatch.started) * 1000 - _generating_ms(usage), 2)
        else:  # a 4xx (nodes.forward raises for the rest): the request's own error
            trace.status = TraceStatus.REJECTED
            trace.error_message = data[:500].decode(errors="replace")
        _apply(trace, usage)
        self.finished = True
        self.status = reply.status
        await self.send({"type": "http.response.start", "status": reply.status,
                         "headers": self._headers(dispatch, reply.content_type, len(data))})
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
        self.started = True
        return True, usage.tokens_per_s

    async def _stream(self, reply: NodeReply, dispatch: Dispatch) -> tuple[bool, float]:
        trace = dispatch.trace
        assert trace is not None
        ctype = reply.content_type
        sse = ctype.startswith("text/event-stream")
        first = await reply.first()
        trace.time_to_first_token_ms = round((time.perf_counter() - dispatch.started) * 1000, 2)
        send = self.send
        self.status = reply.status
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": self._headers(dispatch, ctype, None)})
        self.started = True
        await send({"type": "http.response.body", "body": first, "more_body": True})
        previous, last = b"", first
        events = first.count(b"data: ") if sse else 0
        error = ""
        async with dispatch.renewing():
            try:
                while True:
                    chunk = await reply.readany()
                    if not chunk:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    # only the end is parsed: keep the last two reads, no copying per chunk
                    previous, last = last, chunk
                    if sse:
                        events += chunk.count(b"data: ")
            except UpstreamFailure as failure:
                error = failure.reason
            finally:
                if error:
                    reply.close()
                else:
                    reply.release()
        tail = (previous + last)[-TAIL_BYTES:]
        usage = read_usage(DIALECTS[self.path], tail, stream=True, sse=sse, first=first)
        if sse and not usage.completion_tokens:
            usage.completion_tokens = max(0, events - 2)  # role chunk and [DONE] carry no text
        _apply(trace, usage)
        if error:
            trace.status, trace.error_message = TraceStatus.INCOMPLETE, error
            await send({"type": "http.response.body",
                        "body": error_tail(self.path, error, sse), "more_body": True})
        else:
            trace.status = TraceStatus.COMPLETED
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return not error, usage.tokens_per_s

    def _headers(self, dispatch: Dispatch, ctype: str,
                 length: int | None) -> list[tuple[bytes, bytes]]:
        chosen, trace = dispatch.chosen, dispatch.trace
        assert trace is not None
        headers = [
            (b"content-type", ctype.encode("latin-1")),
            (b"x-fleet-node", (chosen.node.node_id if chosen else "").encode()),
            (b"x-fleet-retries", str(dispatch.retries).encode()),
            (b"x-fleet-score", f"{chosen.score:.2f}".encode() if chosen else b"0"),
            (b"x-fleet-requested-model", header_value(trace.original_model)),
            (b"x-fleet-served-model", trace.model.encode()),
            (b"x-herd-request-id", dispatch.request.request_id.encode()),
            (b"x-fleet-affinity", trace.affinity.encode()),
        ]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return headers

    async def error(self, exc: HerdError, dispatch: Dispatch | None = None) -> None:
        """Answer with `exc` in the API's own shape, unless the answer has begun."""
        if self.started:
            return
        self.started = self.finished = True
        body = _encode(error_body(self.path, exc.status_code, exc.message, exc))
        headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        if dispatch is not None:
            headers.append((b"x-fleet-retries", str(dispatch.retries).encode()))
            requested = dispatch.request.asked_model or dispatch.request.body.get("model")
            if isinstance(requested, str):
                headers.append((b"x-fleet-requested-model", header_value(requested)))
        self.status = exc.status_code
        await self.send({"type": "http.response.start", "status": exc.status_code,
                         "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
