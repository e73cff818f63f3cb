"""Every operation of the router's OpenAPI document as the frozen-Redis drill calls it, with
what it must answer while Redis is frozen and once it is back.

An operation the document has and `CALLS` lacks fails the drill: a new endpoint is added
here with its request and its answers. While Redis is frozen an endpoint that needs the
shared state answers 503 in its API's shape (Ollama's `{"error": ...}`, OpenAI's error
object on /v1/*, Anthropic's on /v1/messages, /healthz its own); one that needs none (the
version, the nodes' own model lists, this replica's settings, count_tokens) answers as
usual.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.redis_drill import MODEL

__all__ = ["CALLS", "EXTRA_MODEL", "Call", "Result", "call_all", "operations", "shape_problem"]

EXTRA_MODEL = "qwen2.5:0.5b"  # pulled and deleted by the calls; the drill's model stays
NODE = "drill-node"
KEY_APP = "drill-frozen"

_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
# A node of its own: the drill's node keeps its record (and its models) whatever happens.
_HEARTBEAT = {"node_id": "frozen-probe", "ollama_host": "http://127.0.0.1:9",
              "ollama": {"up": True, "models_available": [], "models_loaded": []}}
_RUN = {"run_id": "frozen-drill", "status": "completed", "started_at": 1.0,
        "finished_at": 2.0, "model": MODEL}


@dataclass(frozen=True, slots=True)
class Call:
    """One request; `frozen` and `thawed` are the statuses it must answer in each phase."""

    method: str
    template: str  # the path as the OpenAPI document writes it
    path: str = ""  # the path requested (the template unless it has parameters)
    body: Any = None
    frozen: int = 503
    thawed: int = 200
    stream: bool = False  # read the status and headers only (server-sent events)
    form: dict[str, str] | None = None  # sent as a multipart form, with a short WAV file

    @property
    def url_path(self) -> str:
        return self.path or self.template

    @property
    def operation(self) -> tuple[str, str]:
        return self.method.lower(), self.template


# In the order each phase sends them: the pull before the delete of the same model, the
# key's creation before its revocation.
CALLS: tuple[Call, ...] = (
    Call("GET", "/", frozen=200),
    Call("HEAD", "/", frozen=200),
    Call("GET", "/api/version", frozen=200),
    Call("HEAD", "/api/version", frozen=200),
    Call("GET", "/api/tags", frozen=200),  # asks the nodes themselves
    Call("HEAD", "/api/tags", frozen=200),
    Call("GET", "/api/ps", frozen=200),
    Call("GET", "/v1/models", frozen=200),  # this replica's last view of the fleet
    Call("GET", "/v1/models/{model}", path=f"/v1/models/{MODEL}", frozen=200),
    Call("POST", "/api/show", body={"model": MODEL}, frozen=200),
    Call("GET", "/healthz"),
    Call("POST", "/heartbeat", body=_HEARTBEAT),
    Call("GET", "/fleet/status"),
    Call("GET", "/fleet/queue"),
    Call("GET", "/fleet/pins"),
    Call("POST", "/fleet/pins", body={"model": MODEL, "copies": 1}),
    Call("DELETE", "/fleet/pins", path=f"/fleet/pins?model={MODEL}"),
    Call("GET", "/dashboard", frozen=404, thawed=404),  # the drill runs --no-dashboard
    Call("GET", "/dashboard/api/health"),
    Call("GET", "/dashboard/api/recommendations"),
    Call("GET", "/metrics", frozen=200),  # its own counters and herd_redis_up 0
    Call("GET", "/dashboard/api/settings", frozen=200),
    Call("POST", "/dashboard/api/settings", body={"max_retries": 2}),
    Call("GET", "/dashboard/api/model-management", frozen=200),
    Call("POST", "/dashboard/api/pull", body={"model": EXTRA_MODEL, "node_id": NODE,
                                              "stream": False}, frozen=200),
    Call("POST", "/api/pull", body={"model": EXTRA_MODEL, "node_id": NODE, "stream": False},
         frozen=200),
    Call("POST", "/dashboard/api/delete", body={"model": EXTRA_MODEL, "node_id": NODE},
         frozen=200),
    # the nodes change first; a registry that cannot be told learns from the heartbeats
    Call("POST", "/api/copy", body={"source": MODEL, "destination": "drill-copy"},
         frozen=200),
    Call("DELETE", "/api/delete", body={"model": "drill-copy"}, frozen=200),
    Call("POST", "/api/create", body={"model": "drill-made", "from": MODEL, "stream": False},
         frozen=200),
    # these read where this client's uploads go first
    Call("POST", "/api/push", body={"model": MODEL, "stream": False}),
    Call("HEAD", "/api/blobs/{digest}", path=f"/api/blobs/sha256:{'0' * 64}", thawed=404),
    Call("POST", "/api/blobs/{digest}", path=f"/api/blobs/sha256:{'0' * 64}", thawed=400),
    Call("GET", "/dashboard/api/traces"),
    Call("GET", "/dashboard/api/usage"),
    Call("GET", "/dashboard/api/apps"),
    Call("GET", "/dashboard/api/trends"),
    Call("GET", "/dashboard/api/models"),
    Call("GET", "/dashboard/events", stream=True),
    Call("GET", "/dashboard/api/benchmarks"),
    Call("POST", "/dashboard/api/benchmarks", thawed=202, body={
        "model": MODEL, "requests": 2, "concurrency": 1, "max_tokens": 4}),
    Call("POST", "/dashboard/api/benchmarks/runs", body=_RUN, thawed=201),
    Call("GET", "/dashboard/api/keys"),
    Call("POST", "/dashboard/api/keys", body={"app": KEY_APP}, thawed=201),
    Call("DELETE", "/dashboard/api/keys/{app}", path=f"/dashboard/api/keys/{KEY_APP}"),
    Call("POST", "/api/chat", body=_CHAT),
    Call("POST", "/api/generate", body={"model": MODEL, "prompt": "hi", "stream": False}),
    Call("POST", "/api/embed", body={"model": MODEL, "input": "hi"}),
    Call("POST", "/api/embeddings", body={"model": MODEL, "prompt": "hi"}),
    Call("POST", "/v1/chat/completions", body={**_CHAT, "max_tokens": 4}),
    Call("POST", "/v1/completions", body={"model": MODEL, "prompt": "hi", "max_tokens": 4}),
    Call("POST", "/v1/embeddings", body={"model": MODEL, "input": "hi"}),
    Call("POST", "/v1/messages", body={"model": MODEL, "max_tokens": 4,
                                       "messages": _CHAT["messages"]}),
    Call("POST", "/v1/messages/count_tokens", body={"model": MODEL,  # counted here
                                                    "messages": _CHAT["messages"]},
         frozen=200),
    Call("POST", "/v1/responses", body={"model": MODEL, "input": "hi",
                                        "max_output_tokens": 4}),
    Call("POST", "/v1/audio/transcriptions", form={"model": MODEL}),
    Call("POST", "/v1/audio/speech", body={"model": MODEL, "input": "hi", "voice": "alloy"}),
)


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every operation the OpenAPI document describes."""
    methods = {"get", "head", "post", "put", "patch", "delete"}
    return {(method, path) for path, item in document["paths"].items()
            for method in item if method in methods}


@dataclass(frozen=True, slots=True)
class Result:
    call: Call
    seconds: float
    status: int  # 0: no answer within the client's timeout
    headers: dict[str, str]
    body: Any


def _send(client: httpx.Client, base: str, call: Call, headers: dict[str, str]) -> Result:
    started = time.monotonic()
    try:
        upload = {"file": ("drill.wav", b"RIFF0000WAVE", "audio/wav")} \
            if call.form is not None else None
        with client.stream(call.method, base + call.url_path, json=call.body, data=call.form,
                           files=upload, headers=headers) as response:
            if call.stream and response.status_code == 200:
                body: Any = None  # an open event stream: the status is the answer
            else:
                response.read()
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
            return Result(call, time.monotonic() - started, response.status_code,
                          dict(response.headers), body)
    except httpx.HTTPError as exc:
        return Result(call, time.monotonic() - started, 0, {}, repr(exc))


def call_all(base: str, headers: dict[str, str], calls: Sequence[Call], *, timeout: float,
             parallel: bool) -> list[Result]:
    """Each call once: all at the same time, or one after the other in the order given."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        if not parallel:
            return [_send(client, base, call, headers) for call in calls]
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:  # all in flight at once
            return list(pool.map(lambda call: _send(client, base, call, headers), calls))


def shape_problem(result: Result) -> str:
    """Why a 503 is not in its API's shape ('' when it is)."""
    body, path = result.body, result.call.url_path
    if result.call.template == "/healthz":
        ok = isinstance(body, dict) and body.get("status") == "error" and "redis" in body
        return "" if ok else f"not /healthz's error shape: {body!r}"
    if not result.headers.get("retry-after", "").isdigit():
        return f"no Retry-After: {result.headers}"
    if result.call.method == "HEAD":  # the status and headers are all a HEAD answer has
        return "" if body == "" else f"a body in a HEAD answer: {body!r}"
    if result.call.stream:
        return "" if isinstance(body, dict) and isinstance(body.get("error"), str) else \
            f"not Ollama's error shape: {body!r}"
    if path.startswith("/v1/messages"):
        error = body.get("error") if isinstance(body, dict) else None
        ok = body.get("type") == "error" and isinstance(error, dict) and \
            error.get("type") == "overloaded_error" and isinstance(error.get("message"), str)
        return "" if ok else f"not Anthropic's error shape: {body!r}"
    if path.startswith("/v1/"):
        error = body.get("error") if isinstance(body, dict) else None
        ok = isinstance(error, dict) and error.get("code") == "state_unavailable" and \
            error.get("type") == "server_error" and isinstance(error.get("message"), str)
        return "" if ok else f"not OpenAI's error object: {body!r}"
    ok = isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    return "" if ok else f"not Ollama's error shape: {body!r}"
