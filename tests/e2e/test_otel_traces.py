"""OpenTelemetry traces from a real router over simulated nodes, received by a local
OTLP/HTTP collector in this process: the span tree, the GenAI attributes, a client's
traceparent continued and the node call's forwarded, token counts, error spans; and a
collector that cannot be reached, which loses spans and never requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import free_port, wait_until
from tests.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

MODEL = "llama3.2:3b"
EMBED = "nomic-embed-text:latest"
MSG = [{"role": "user", "content": "hello there"}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
# Batches leave every 100 ms: the test waits for spans, not the SDK's 5 s default.
OTEL_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "herd-e2e",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=ml"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
          receiver: OtlpReceiver) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("otel-fleet")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **OTEL_ENV}
    with start_fleet(tmp, redis_url, {"n0": [], "n1": []}, env=env) as running:
        # n0 has the model loaded: requests go there first
        httpx.post(f"{running.sim_url('n0')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        running.heartbeat_all()
        yield running


def spans_of(receiver: OtlpReceiver, request_id: str, count: int) -> list[ReceivedSpan]:
    """The request's spans once `count` of them arrived."""
    return wait_until(lambda: (found := receiver.by_request(request_id)) and
                      len(found) >= count and found, timeout=10,
                      message=f"{count} spans of request {request_id}")


def tree(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, list[ReceivedSpan],
                                              list[ReceivedSpan]]:
    """The request span, its queue-wait children and its node-call children."""
    [root] = [s for s in spans if s.kind == "server"]
    children = [s for s in spans if s.parent_id == root.span_id]
    assert len(children) == len(spans) - 1, [(s.name, s.parent_id) for s in spans]
    waits = [s for s in children if s.name == "queue wait"]
    calls = sorted((s for s in children if s.name == "node call"),
                   key=lambda s: s.attributes["herd.attempt"])
    assert len(waits) + len(calls) == len(children)
    return root, waits, calls


def node_traceparent(fleet: Fleet, node_id: str, path: str, content: str) -> str:
    """The traceparent the node received with the last request of `content`."""
    for entry in reversed(fleet.sim_stats(node_id)["last_requests"]):
        if entry["path"] == path and content in json.dumps(entry["body"]):
            return str(entry.get("headers", {}).get("traceparent", ""))
    raise AssertionError(f"{node_id} saw no {path} with {content!r}")


def test_a_chat_is_one_span_with_its_queue_wait_and_node_call_continuing_the_client(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    before = time.time_ns()
    r = httpx.post(f"{fleet.url}/api/chat", timeout=30,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "span one"}],
                         "stream": False},
                   headers={"traceparent": parent, "tracestate": "vendor=abc",
                            "X-Herd-Priority": "high", "X-Herd-Tags": "docs,search"})
    assert r.status_code == 200, r.text
    answer = r.json()
    request_id = r.headers["x-herd-request-id"]
    root, waits, calls = tree(spans_of(receiver, request_id, 3))

    # the client's trace is continued: same trace id, the client's span as parent
    assert root.trace_id == CLIENT_TRACE and root.parent_id == CLIENT_SPAN
    assert root.name == f"chat {MODEL}" and root.status == "unset"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "ollama"
    assert a["gen_ai.request.model"] == MODEL == a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] == answer["prompt_eval_count"] > 0
    assert a["gen_ai.usage.output_tokens"] == answer["eval_count"] > 0
    assert a["gen_ai.response.finish_reasons"] == [answer["done_reason"]]
    sim_port = int(fleet.sim_url("n0").rsplit(":", 1)[1])
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", sim_port)
    assert a["herd.node"] == r.headers["x-fleet-node"] == "n0"
    assert a["herd.retries"] == 0 and a["herd.priority"] == "high"
    assert a["herd.tags"] == ["docs", "search"] and a["herd.status"] == "completed"
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert a["herd.affinity"] in {"hit", "moved", "new"}
    assert isinstance(a["herd.affinity_hit"], bool)
    assert a["herd.queue_wait_ms"] >= 0 and a["herd.time_to_first_token_ms"] > 0
    assert before <= root.start_ns <= root.end_ns <= time.time_ns()
    assert root.resource["service.name"] == "herd-e2e"
    assert root.resource["deployment.environment.name"] == "test"
    assert root.resource["team"] == "ml" and root.resource["service.instance.id"]

    [wait] = waits
    assert wait.attributes["herd.node"] == "n0" and wait.trace_id == CLIENT_TRACE
    assert root.start_ns <= wait.start_ns <= wait.end_ns <= root.end_ns
    [call] = calls
    assert call.kind == "client" and call.attributes["herd.node"] == "n0"
    assert call.attributes["server.port"] == sim_port
    assert call.attributes["http.response.status_code"] == 200
    assert wait.end_ns <= call.start_ns <= call.end_ns <= root.end_ns

    # the node got the node call's context, with the client's trace state
    assert node_traceparent(fleet, "n0", "/api/chat", "span one") == \
        f"00-{CLIENT_TRACE}-{call.span_id}-01"


def test_without_a_traceparent_the_request_starts_a_trace_and_still_forwards_one(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    r = httpx.post(f"{fleet.url}/api/generate", timeout=30,
                   json={"model": MODEL, "prompt": "span two", "stream": False})
    assert r.status_code == 200, r.text
    root, _, [call] = tree(spans_of(receiver, r.headers["x-herd-request-id"], 3))
    assert root.parent_id == "" and root.trace_id != CLIENT_TRACE
    assert root.name == f"text_completion {MODEL}"
    assert root.attributes["gen_ai.usage.output_tokens"] == r.json()["eval_count"]
    # a trace Herd starts has random ids: level 2's "random" flag (0x02) beside "sampled"
    assert node_traceparent(fleet, "n0", "/api/generate", "span two") == \
        f"00-{root.trace_id}-{call.span_id}-03"


def test_a_client_that_does_not_sample_is_not_recorded_but_its_trace_reaches_the_node(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    r = httpx.post(f"{fleet.url}/api/generate", timeout=30,
                   headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"},
                   json={"model": MODEL, "prompt": "span unsampled", "stream": False})
    assert r.status_code == 200, r.text
    forwarded = node_traceparent(fleet, "n0", "/api/generate", "span unsampled")
    assert forwarded.startswith(f"00-{trace_id}-") and forwarded.endswith("-00")
    time.sleep(0.5)  # several batches' time
    assert receiver.trace(trace_id) == []


def test_streams_and_embeddings_count_their_tokens_and_name_their_operation(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="unused", max_retries=0)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "span three"}], stream=True,
            stream_options={"include_usage": True})
        usage: Any = None
        for chunk in raw.parse():
            usage = chunk.usage or usage
        assert usage is not None
        root, _, [call] = tree(spans_of(receiver, raw.headers["x-herd-request-id"], 3))
        assert root.name == f"chat {MODEL}" and root.attributes["url.path"] == \
            "/v1/chat/completions"
        assert root.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens > 0
        assert root.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens > 0
        assert call.end_ns <= root.end_ns and call.status == "unset"
    finally:
        client.close()
    reply = httpx.post(f"{fleet.url}/api/embed", json={"model": EMBED, "input": ["a", "b"]},
                       timeout=30)
    assert reply.status_code == 200, reply.text
    root, _, _ = tree(spans_of(receiver, reply.headers["x-herd-request-id"], 3))
    assert root.name == f"embeddings {EMBED}"
    assert root.attributes["gen_ai.operation.name"] == "embeddings"
    assert root.attributes["gen_ai.usage.input_tokens"] == reply.json()["prompt_eval_count"]


def test_anthropic_messages_are_chat_spans_with_their_usage(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    claude = anthropic.Anthropic(base_url=fleet.url, api_key="unused", max_retries=0)
    try:
        raw = claude.messages.with_raw_response.create(
            model=MODEL, max_tokens=12,
            messages=[{"role": "user", "content": "span messages"}])
        reply = raw.parse()
    finally:
        claude.close()
    root, _, [call] = tree(spans_of(receiver, raw.headers["x-herd-request-id"], 3))
    assert root.name == f"chat {MODEL}" and root.attributes["url.path"] == "/v1/messages"
    assert root.attributes["gen_ai.usage.input_tokens"] == reply.usage.input_tokens > 0
    assert root.attributes["gen_ai.usage.output_tokens"] == reply.usage.output_tokens > 0
    assert node_traceparent(fleet, root.attributes["herd.node"], "/v1/messages",
                            "span messages") == f"00-{root.trace_id}-{call.span_id}-03"


def test_a_failed_node_call_is_an_error_span_and_the_retry_a_second_call(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    fleet.fault("n0", "error500", count=1)
    try:
        r = httpx.post(f"{fleet.url}/api/chat", timeout=30,
                       json={"model": MODEL, "stream": False,
                             "messages": [{"role": "user", "content": "span retried"}]})
    finally:
        fleet.fault("n0", "none")
    assert r.status_code == 200, r.text
    assert r.headers["x-fleet-retries"] == "1" and r.headers["x-fleet-node"] == "n1"
    root, waits, calls = tree(spans_of(receiver, r.headers["x-herd-request-id"], 5))
    assert len(waits) == 2 and [c.attributes["herd.node"] for c in calls] == ["n0", "n1"]
    failed, served = calls
    assert failed.status == "error" and failed.attributes["error.type"] == "UpstreamFailure"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["herd.blame"] == "model" and "n0" in failed.status_message
    assert served.status == "unset" and "error.type" not in served.attributes
    assert root.attributes["herd.retries"] == 1 and root.attributes["herd.node"] == "n1"
    assert root.attributes["herd.excluded_nodes"] == ["n0"]
    assert root.status == "unset" and "error.type" not in root.attributes
    assert node_traceparent(fleet, "n1", "/api/chat", "span retried") == \
        f"00-{root.trace_id}-{served.span_id}-03"


def test_errors_set_error_type_on_the_request_span(
    fleet: Fleet, receiver: OtlpReceiver,
) -> None:
    missing = ollama.Client(host=fleet.url)
    with pytest.raises(ollama.ResponseError) as raised:
        missing.chat(model="no-such-model:1b", messages=MSG)
    assert raised.value.status_code == 404
    [root] = wait_until(
        lambda: [s for s in receiver.spans
                 if s.attributes.get("gen_ai.request.model") == "no-such-model:1b"],
        timeout=10, message="the span of the 404")
    assert root.attributes["error.type"] == "ModelNotFound"
    assert root.attributes["http.response.status_code"] == 404
    assert root.attributes["herd.status"] == "rejected"
    assert root.status == "unset"  # the client's error, not the server's
    assert receiver.trace(root.trace_id) == [root]  # no node was called

    for node_id in fleet.sims:  # n0 may be cooling down after the retry test's failure
        fleet.fault(node_id, "die_mid_stream", after_tokens=2)
    try:
        r = httpx.post(f"{fleet.url}/api/chat", timeout=30,
                       json={"model": MODEL, "stream": True,
                             "messages": [{"role": "user", "content": "span cut"}]})
    finally:
        for node_id in fleet.sims:
            fleet.fault(node_id, "none")
    assert r.status_code == 200 and '"error"' in r.text.splitlines()[-1]
    root, _, [call] = tree(spans_of(receiver, r.headers["x-herd-request-id"], 3))
    assert root.status == "error" and root.attributes["error.type"] == "incomplete"
    assert root.attributes["herd.status"] == "incomplete"
    assert call.status == "error" and call.attributes["error.type"] == "incomplete"


def _log_lines(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "logs" / "herd.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_unreachable_collector_loses_spans_never_requests_and_says_so_once(
    tmp_path: Path, redis_url: str,
) -> None:
    port = free_port()  # nothing listens here until the collector "comes back"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5", **{
               k: v for k, v in OTEL_ENV.items() if k != "OTEL_BSP_SCHEDULE_DELAY"}}
    with start_fleet(tmp_path, redis_url, {"n0": []}, env=env) as fleet:
        body = {"model": MODEL, "prompt": "down", "stream": False,
                "options": {"num_predict": 2}}
        deadline = time.monotonic() + 2.5  # several batches, each failing
        sent = 0
        while time.monotonic() < deadline and sent < 200:
            r = httpx.post(f"{fleet.url}/api/generate", json=body, timeout=10)
            assert r.status_code == 200, r.text
            sent += 1
            time.sleep(0.02)
        assert sent >= 20
        lines = wait_until(lambda: [e for e in _log_lines(fleet.data_dir)
                                    if e["logger"] == "herd.telemetry"
                                    and "cannot export" in e["msg"]],
                           timeout=10, message="the collector's failure in the log")
        time.sleep(1.5)  # more failed batches: still one line
        log = _log_lines(fleet.data_dir)
        assert len([e for e in log if "cannot export" in e["msg"]]) == 1
        assert lines[0]["endpoint"] == f"http://127.0.0.1:{port}/v1/traces"
        assert lines[0]["error"]  # the SDK's reason, said once
        assert not [e for e in log if e["logger"].startswith("opentelemetry")]

        # the collector comes back: spans flow again, and the log says so
        with OtlpReceiver(port) as receiver:
            r = httpx.post(f"{fleet.url}/api/generate", json=body, timeout=10)
            assert r.status_code == 200
            spans_of(receiver, r.headers["x-herd-request-id"], 3)
            wait_until(lambda: any("takes spans again" in e["msg"]
                                   for e in _log_lines(fleet.data_dir)), timeout=10,
                       message="the recovery in the log")
        # ... and goes away again: a new outage, said once more
        for _ in range(5):
            assert httpx.post(f"{fleet.url}/api/generate", json=body,
                              timeout=10).status_code == 200
        wait_until(lambda: len([e for e in _log_lines(fleet.data_dir)
                                if "cannot export" in e["msg"]]) == 2,
                   timeout=10, message="the second outage in the log")
        assert httpx.post(f"{fleet.url}/api/generate", json=body,
                          timeout=10).status_code == 200
        started = time.monotonic()  # a replica stops without waiting for a collector
        assert fleet.router.stop() == 0  # that is known to be down
        assert time.monotonic() - started < 5
        log = _log_lines(fleet.data_dir)
        assert not [e for e in log if e["logger"].startswith("opentelemetry")], log[-5:]
        assert len([e for e in log if "cannot export" in e["msg"]]) == 2


def test_tracing_off_loads_neither_the_tracer_nor_the_exporter() -> None:
    """Off (no endpoint), the router never loads its spans module, the SDK's tracer or the
    exporter. (redis-py's own `redis.observability` imports OpenTelemetry's metrics API
    whenever the package is installed; that is redis-py's, and costs nothing per request.)"""
    code = ("import sys, services.router.app, services.router.proxy.exchange;"
            "print(sorted(m for m in sys.modules if m.startswith(("
            "'opentelemetry.sdk.trace', 'opentelemetry.exporter', "
            "'opentelemetry.trace.propagation.tracecontext', 'services.router.telemetry.'))))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
