"""A seeded fuzz run: several hundred hostile requests to every endpoint of a real router.

Each request is written on a raw socket (so headers and paths go out exactly as built, CR/LF
and invalid UTF-8 included) and must get a complete HTTP answer: no 500, no traceback, no
dropped connection, no hang. Where a field Herd reads has the wrong type, the 400 names it.
Afterwards a normal request still works.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet

SEED = 20261130
MODEL = "llama3.2:3b"
ABSENT = "absent-model:1b"  # for mutations: nothing the fleet has is pulled or deleted
ANSWER_TIMEOUT = 20.0  # seconds for a complete answer; more counts as a hang

# Every endpoint, each with a body whose fields the fuzzer spoils one at a time (but the
# blob upload: its body is not JSON, and with no size limit a body announced larger than
# sent is an upload still under way; tests/e2e/test_manage_fleet.py covers it). The
# fields Herd itself reads are listed in `checked`: a wrong type there must be a 400 that
# names the field (the rest pass through to the node, which judges them).
@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict[str, object] | None = None
    checked: tuple[str, ...] = ()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
ENDPOINTS = [
    Endpoint("POST", "/api/chat", CHAT, ("model",)),
    Endpoint("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False},
             ("model",)),
    Endpoint("POST", "/api/embed", {"model": "nomic-embed-text:latest", "input": "hi"},
             ("model",)),
    Endpoint("POST", "/api/embeddings", {"model": "nomic-embed-text:latest", "prompt": "hi"},
             ("model",)),
    Endpoint("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 4}, ("model",)),
    Endpoint("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4},
             ("model",)),
    Endpoint("POST", "/v1/embeddings", {"model": "nomic-embed-text:latest", "input": "hi"},
             ("model",)),
    Endpoint("POST", "/api/show", {"model": MODEL}, ("model",)),
    Endpoint("POST", "/api/pull", {"model": ABSENT, "stream": False}, ("model",)),
    Endpoint("POST", "/dashboard/api/pull", {"model": ABSENT, "node_id": "f0"},
             ("model", "node_id")),
    Endpoint("POST", "/dashboard/api/delete", {"model": ABSENT, "node_id": "f0"},
             ("model", "node_id")),
    Endpoint("DELETE", "/api/delete", {"model": ABSENT}, ("model",)),
    Endpoint("POST", "/api/copy", {"source": ABSENT, "destination": "fuzz-copy"},
             ("source", "destination")),
    Endpoint("POST", "/api/create", {"model": "fuzz-made", "from": MODEL, "stream": False},
             ("model",)),
    Endpoint("POST", "/api/push", {"model": ABSENT, "stream": False}, ("model",)),
    Endpoint("POST", "/dashboard/api/settings", {"max_retries": 2},
             ("max_retries",)),
    Endpoint("POST", "/dashboard/api/settings", {"queue_timeout": 300.0},
             ("queue_timeout",)),
    Endpoint("POST", "/dashboard/api/benchmarks",
             {"model": ABSENT, "requests": 1, "concurrency": 1, "max_tokens": 4},
             ("requests", "concurrency", "max_tokens")),
    Endpoint("POST", "/dashboard/api/keys",
             {"app": "fuzz", "requests_per_minute": 0, "tokens_per_minute": 0},
             ("app", "requests_per_minute", "tokens_per_minute")),
    Endpoint("DELETE", "/dashboard/api/keys/fuzz"),
    Endpoint("POST", "/heartbeat", {"node_id": "x"}),
    *(Endpoint("GET", path) for path in (
        "/", "/healthz", "/api/tags", "/api/ps", "/api/version", "/v1/models",
        f"/v1/models/{MODEL}", "/fleet/status", "/fleet/queue", "/metrics", "/dashboard",
        "/dashboard/api/health", "/dashboard/api/traces", "/dashboard/api/usage",
        "/dashboard/api/apps", "/dashboard/api/trends", "/dashboard/api/models",
        "/dashboard/api/recommendations", "/dashboard/api/model-management",
        "/dashboard/api/settings", "/dashboard/api/benchmarks", "/dashboard/api/keys",
    )),
]

WRONG: list[object] = [
    None, True, 0, -1, 1.5, 10**30, -(10**30), "", "x" * 5000, [], [1, "a"], {}, {"a": {}},
    "<script>alert(1)</script>", "../../etc/passwd", "a\r\nX-Injected: yes", "\u0000",
    "\ud83e\udd99", "NaN", "1e999",
]
RAW_BODIES: list[bytes] = [
    b"", b"{", b"}", b"not json", b"null", b"[]", b"1", b'"str"', b"\xff\xfe\x00",
    b'{"model": "\xff\xfe"}', b'{"model": "llama3.2:3b", "prompt": "\xc3\x28"}',
    b"[" * 20_000, b'{"a":' * 20_000, b'{"model":"llama3.2:3b","messages":' + b"[" * 20_000,
    b'{"model": NaN}', b'{"model": 1e999999}', b'{"max_retries": 1e400}',
    b'{"model": "llama3.2:3b", "options": {"num_ctx": 1e400}}',
    b'{"model": "llama3.2:3b", "options": {"num_ctx": "big"}, "stream": false}',
    b'{"model": "llama3.2:3b",' + b'"k":1,' * 5000 + b'"z":0}', b"\x00" * 64,
    b'{"model": "llama3.2:3b", "model": 5}',
]
PATHS = [
    "/api/../dashboard/api/settings", "/v1/models/../../etc/passwd", "/v1/models/%2e%2e%2f",
    "/v1/models/llama3.2%3A3b%0d%0aX-Injected:%20yes", "/dashboard/api/keys/..%2f..%2f",
    "/dashboard/api/keys/%00", "//api/chat", "/api/chat%00", "/api/chat/", "/%ff%fe",
    "/dashboard/api/keys/" + "a" * 3000, "/v1/models/" + "<script>",
]
QUERIES = [
    "limit=-1", "limit=1e9", "limit=abc", "limit=99999999999999999999999", "hours=NaN",
    "hours=0", "a=%ff%fe", "&&&=&", "tag=<script>", "status=nope", "limit=1&limit=2",
    "model=../../x", "node=%0d%0a", "limit=%00", "hours=" + "9" * 400,
]
HEADERS = [
    ("X-Herd-Tags", "a,\tb,<script>," + "t" * 300), ("X-Herd-Node", "../../n"),
    ("Authorization", "Bearer \xe9\xe8"), ("Authorization", "Basic Zm9vOmJhcg=="),
    ("Content-Length", "99999999999"), ("Content-Type", "text/html; charset=\xff"),
    ("X-Herd-Tags", "\u00e9t\u00e9"), ("Transfer-Encoding", "chunked, identity"),
]


def raw_request(method: str, target: str, body: bytes, headers: list[tuple[str, str]],
                port: int) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    names = {name.lower() for name, _ in headers}
    if "content-length" not in names and "transfer-encoding" not in names:
        head += f"Content-Length: {len(body)}\r\n"
    if "content-type" not in names and body:
        head += "Content-Type: application/json\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def send(port: int, payload: bytes) -> tuple[int, bytes]:
    """Write `payload`, read to EOF: (status, whole answer). Fails on no answer or a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        # the server may answer early (a 413, say) and close: then read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        # no half-close: the router takes a client's EOF for a disconnect, as a client that
        # went away, and rightly answers nothing
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    assert answer.startswith(b"HTTP/1.1 "), f"no answer (dropped connection): {answer[:200]!r}"
    return int(answer[9:12]), answer


def cases(rng: random.Random) -> Iterator[tuple[str, Endpoint, str, bytes, list[tuple[str, str]],
                                               str]]:
    """(label, endpoint, target, body, headers, field expected in a 400) in a seeded order."""
    for endpoint in ENDPOINTS:
        base = endpoint.body
        if base is not None:
            for raw in RAW_BODIES:
                yield "raw body", endpoint, endpoint.path, raw, [], ""
            for name in base:
                for value in rng.sample(WRONG, 8):
                    body = json.dumps({**base, name: value}).encode()
                    yield f"{name}={value!r:.40}", endpoint, endpoint.path, body, [], name
            for extra in rng.sample(HEADERS, 3):
                yield f"header {extra[0]}", endpoint, endpoint.path, json.dumps(base).encode(), \
                    [extra], ""
        else:
            for query in rng.sample(QUERIES, 6):
                yield f"query {query:.40}", endpoint, f"{endpoint.path}?{query}", b"", [], ""
            yield "body on GET", endpoint, endpoint.path, b"[" * 20_000, [], ""
            yield "wrong method", endpoint, endpoint.path, b"{}", [], ""
    for path in PATHS:
        for _ in range(3):  # the method is drawn per request
            yield f"path {path:.40}", ENDPOINTS[0], path, b"{}", [], ""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    # A valid-looking name ("NaN") is a legitimate pull: make the simulated download quick.
    with start_fleet(tmp_path_factory.mktemp("fuzz"), redis_url,
                     {"f0": ["--pull-seconds-per-gb", "0.01"]},
                     env={"FLEET_MAX_BODY_MB": "1"}) as running:
        yield running


def test_hostile_requests_get_clean_answers(fleet: Fleet) -> None:
    port = int(fleet.url.rsplit(":", 1)[1])
    rng = random.Random(SEED)
    failures: list[str] = []
    count = 0
    for label, endpoint, target, body, headers, field in cases(rng):
        method = endpoint.method
        if label == "wrong method":
            method = "PUT"
        elif label.startswith("path "):
            method = rng.choice(("GET", "POST", "DELETE"))
        count += 1
        status, answer = send(port, raw_request(method, target, body, headers, port))
        where = f"{method} {target[:60]} [{label}]"
        if status >= 500 and status not in (502, 503):
            failures.append(f"{where}: {status} {answer[-300:]!r}")
        elif b"Traceback" in answer:
            failures.append(f"{where}: a traceback in the answer")
        elif (status == 400 and field in endpoint.checked
              and field.encode() not in answer.split(b"\r\n\r\n", 1)[-1]):
            failures.append(f"{where}: the 400 does not name {field!r}: {answer[-200:]!r}")
    assert count >= 500
    assert not failures, f"{len(failures)} of {count} failed:\n" + "\n".join(failures[:40])
    # The router is still whole: undo what valid-looking values may have changed, then a
    # normal request works.
    for key in httpx.get(f"{fleet.url}/dashboard/api/keys", timeout=5).json()["keys"]:
        httpx.delete(f"{fleet.url}/dashboard/api/keys/{key['app']}", timeout=5)
    listed = httpx.get(f"{fleet.url}/dashboard/api/settings", timeout=5).json()["settings"]
    changed = {s["name"]: s["default"] for s in listed if s["value"] != s["default"]}
    if changed:
        assert httpx.post(f"{fleet.url}/dashboard/api/settings", json=changed,
                          timeout=5).status_code == 200
    fleet.heartbeat_all()
    reply = httpx.post(f"{fleet.url}/api/chat", json=CHAT, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["content"]
    assert "Traceback" not in fleet.router.output()
