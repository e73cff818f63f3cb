"""Model management, /api/version and CORS through a real fleet: two router replicas on
one Redis, three simulated Ollamas of different versions, the official `ollama` client."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import psutil
import pytest

from shared.version import VERSION
from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import Proc, free_port, herd_bin, wait_until

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "https://chat.example.com"
VERSIONS = {"n0": "0.40.8", "n1": "0.14.0", "n2": "0.13.3"}
# n2 has the most free disk, so it gets uploads and creates nobody placed elsewhere
DISK = {"n0": 40.0, "n1": 60.0, "n2": 90.0}
MODELS = {"n0": "llama3.2:3b,qwen3:0.6b", "n1": "llama3.2:3b", "n2": "smollm:135m"}


def beat(fleet: Fleet, node_id: str, *, draining: bool = False) -> None:
    """A heartbeat saying what the simulator has, with its Ollama version and free disk."""
    payload = fleet.heartbeat(node_id)
    payload["ollama"]["version"] = VERSIONS[node_id]
    payload["disk"]["available_gb"] = DISK[node_id]
    payload["draining"] = draining
    answer = httpx.post(f"{fleet.url}/heartbeat", json=payload, timeout=5)
    assert answer.status_code == 200, answer.text


def beat_all(fleet: Fleet) -> None:
    for node_id in fleet.sims:
        beat(fleet, node_id)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("manage")
    nodes = {n: ["--models", MODELS[n], "--ollama-version", VERSIONS[n],
                 "--pull-seconds-per-gb", "0.5"] for n in VERSIONS}
    env = {"FLEET_ADMIN_TOKEN": TOKEN, "FLEET_CORS_ORIGINS": f"{ORIGIN},http://localhost:*"}
    with start_fleet(tmp, redis_url, nodes, env=env, replicas=2) as started:
        beat_all(started)
        # every replica sees the versions before a test reads them
        wait_until(lambda: all(httpx.get(f"{u}/api/version").json()["version"] == "0.13.3"
                               for u in started.urls), timeout=10, message="versions seen")
        yield started


def client(url: str, token: str | None = TOKEN) -> ollama.Client:
    return ollama.Client(url, headers={"Authorization": f"Bearer {token}"} if token else {})


def installed(fleet: Fleet, node_id: str) -> set[str]:
    tags = httpx.get(f"{fleet.control[node_id]}/api/tags", timeout=5).json()["models"]
    return {m["name"] for m in tags}


def openai_models(url: str) -> set[str]:
    """The router's own view (its registry snapshot), not the nodes' answers."""
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=5).json()["data"]}


# --- delete and copy -------------------------------------------------------------------


def test_copy_and_delete_reach_every_node_that_has_the_model(fleet: Fleet) -> None:
    ollama_client = client(fleet.url)
    assert ollama_client.copy("llama3.2:3b", "team/llama-copy").status == "success"
    assert all("team/llama-copy:latest" in installed(fleet, n) for n in ("n0", "n1"))
    assert "team/llama-copy:latest" not in installed(fleet, "n2")
    # both replicas' registries list it at once, before any heartbeat
    for url in fleet.urls:
        wait_until(lambda u=url: "team/llama-copy:latest" in openai_models(u), timeout=5,
                   message="the copy noted in every replica")

    answer = httpx.request("DELETE", f"{fleet.urls[1]}/api/delete", headers=AUTH,
                           json={"model": "team/llama-copy"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.text == ""  # Ollama's own answer: no body
    assert answer.headers["x-herd-nodes"] == "n0,n1"
    assert not any("team/llama-copy:latest" in installed(fleet, n) for n in fleet.sims)
    for url in fleet.urls:
        wait_until(lambda u=url: "team/llama-copy:latest" not in openai_models(u),
                   timeout=5, message="the delete noted in every replica")

    with pytest.raises(ollama.ResponseError) as missing:
        ollama_client.delete("team/llama-copy")
    assert missing.value.status_code == 404
    assert missing.value.error == "model 'team/llama-copy:latest' not found"
    with pytest.raises(ollama.ResponseError) as no_source:
        ollama_client.copy("nothing-here", "other")
    assert no_source.value.status_code == 404
    assert "nothing-here" in no_source.value.error


def test_a_node_that_fails_makes_the_answer_an_error_that_names_it(fleet: Fleet) -> None:
    ollama_client = client(fleet.url)
    ollama_client.copy("llama3.2:3b", "half-gone")
    fleet.fault("n1", "error500", status=500)
    try:
        answer = httpx.request("DELETE", f"{fleet.url}/api/delete", headers=AUTH,
                               json={"model": "half-gone"}, timeout=10)
    finally:
        fleet.fault("n1", "none")
    assert answer.status_code == 502
    assert answer.headers["x-herd-nodes"] == "n0"
    assert answer.headers["x-herd-failed-nodes"] == "n1"
    message = answer.json()["error"]
    assert message.startswith("delete half-gone:latest; done on n0; failed on n1: ")
    assert "half-gone:latest" not in installed(fleet, "n0")
    assert "half-gone:latest" in installed(fleet, "n1")
    # deleting again finishes the job: n1 is the only node left with it
    ollama_client.delete("half-gone")
    assert "half-gone:latest" not in installed(fleet, "n1")


def test_a_node_that_is_gone_is_named_and_fails_only_where_it_holds_the_model(
    fleet: Fleet,
) -> None:
    """A node that registered and stopped answering: if the registry does not list the
    model there it most likely lacks it (named in a header); if it does, the copy left
    there is a failure."""
    ghost = fleet.heartbeat("n0")
    ghost.update(node_id="ghost", ollama_host="http://127.0.0.1:9")
    ghost["ollama"]["models_available"] = ["qwen3:0.6b"]
    assert httpx.post(f"{fleet.url}/heartbeat", json=ghost, timeout=5).status_code == 200
    wait_until(lambda: all(any(n["node_id"] == "ghost" for n in httpx.get(
        f"{u}/fleet/status").json()["nodes"]) for u in fleet.urls), timeout=5,
        message="the ghost registered")
    ollama_client = client(fleet.url)
    try:
        copied = httpx.post(f"{fleet.url}/api/copy", headers=AUTH, timeout=10,
                            json={"source": "llama3.2:3b", "destination": "ghostly"})
        assert copied.status_code == 200, copied.text
        assert copied.headers["x-herd-unreached-nodes"] == "ghost"
        ollama_client.delete("ghostly")
        with pytest.raises(ollama.ResponseError) as failed:
            ollama_client.copy("qwen3:0.6b", "ghostly-qwen")
        assert failed.value.status_code == 502
        assert "done on n0; failed on ghost: " in failed.value.error
    finally:
        ollama_client.delete("ghostly-qwen")
        # a goodbye: no longer servable, so no later placement or version counts it
        httpx.post(f"{fleet.url}/heartbeat", json={"node_id": "ghost", "draining": True},
                   timeout=5)


def test_bad_names_are_refused_before_any_node_is_asked(fleet: Fleet) -> None:
    for body in ({"source": "llama3.2:3b"}, {"source": "a b", "destination": "c"},
                 {"source": "llama3.2:3b", "destination": "../x"}):
        answer = httpx.post(f"{fleet.url}/api/copy", headers=AUTH, json=body, timeout=5)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"}
    not_json = httpx.request("DELETE", f"{fleet.url}/api/delete", headers=AUTH,
                             content=b"{", timeout=5)
    assert not_json.status_code == 400
    assert "invalid JSON" in not_json.json()["error"]


# --- create, blobs and push ------------------------------------------------------------


def gguf(tmp_path: Path, name: str, size: int = 300_000) -> Path:
    path = tmp_path / name
    path.write_bytes(b"GGUF" + hashlib.sha256(name.encode()).digest() * (size // 32))
    return path


def test_create_runs_where_its_blob_went_whichever_replica_is_asked(
    fleet: Fleet, tmp_path: Path,
) -> None:
    # the upload through one replica, the create through the other
    digest = client(fleet.urls[0]).create_blob(gguf(tmp_path, "one.gguf"))
    blob = httpx.head(f"{fleet.sim_url('n2')}/api/blobs/{digest}", timeout=5)
    assert blob.status_code == 200  # the roomiest node got it
    lines = list(client(fleet.urls[1]).create(
        model="made-here", files={"one.gguf": digest}, system="be brief", stream=True))
    assert [line.status for line in lines][-1] == "success"
    assert any((line.status or "").startswith("using existing layer") for line in lines)
    assert "made-here:latest" in installed(fleet, "n2")
    assert not any("made-here:latest" in installed(fleet, n) for n in ("n0", "n1"))
    for url in fleet.urls:
        wait_until(lambda u=url: "made-here:latest" in openai_models(u), timeout=5,
                   message="the created model noted in every replica")
    # and it serves requests at once, on that node
    chat = httpx.post(f"{fleet.url}/api/chat", json={
        "model": "made-here", "messages": [{"role": "user", "content": "hi"}],
        "stream": False}, timeout=30)
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-fleet-node"] == "n2"


def test_x_herd_node_places_the_blobs_and_the_create(fleet: Fleet, tmp_path: Path) -> None:
    path = gguf(tmp_path, "two.gguf", 2_000_000)
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    pin = {**AUTH, "X-Herd-Node": "n1"}
    head = httpx.head(f"{fleet.url}/api/blobs/{digest}", headers=pin, timeout=5)
    assert (head.status_code, head.headers["x-fleet-node"]) == (404, "n1")

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked, as the Go CLI does
        data = path.read_bytes()
        for start in range(0, len(data), 65536):
            yield data[start:start + 65536]

    upload = httpx.post(f"{fleet.urls[1]}/api/blobs/{digest}", headers=pin,
                        content=chunks(), timeout=30)
    assert (upload.status_code, upload.headers["x-fleet-node"]) == (201, "n1")
    assert httpx.head(f"{fleet.sim_url('n1')}/api/blobs/{digest}").status_code == 200
    # the blob is remembered: HEAD without X-Herd-Node finds it on n1
    again = httpx.head(f"{fleet.url}/api/blobs/{digest}", headers=AUTH, timeout=5)
    assert (again.status_code, again.headers["x-fleet-node"]) == (200, "n1")
    create = httpx.post(f"{fleet.url}/api/create", headers=AUTH, timeout=30, json={
        "model": "pinned-made", "files": {"two.gguf": digest}, "stream": False})
    assert create.status_code == 200, create.text
    assert create.json() == {"status": "success"}
    assert create.headers["x-fleet-node"] == "n1"
    assert "pinned-made:latest" in installed(fleet, "n1")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_blob_larger_than_the_body_limit_streams_through_without_being_held(
    fleet: Fleet,
) -> None:
    """256 MiB, four times max_body_mb: no 413, and the router's peak memory grows by far
    less than the blob (it is passed on as it arrives, with back-pressure)."""
    size, piece = 256 << 20, 1 << 20
    hasher = hashlib.sha256()
    for i in range(size // piece):
        hasher.update(b"GGUF" + bytes([i % 251]) * (piece - 4))
    digest = "sha256:" + hasher.hexdigest()

    def chunks() -> Iterator[bytes]:
        for i in range(size // piece):
            yield b"GGUF" + bytes([i % 251]) * (piece - 4)

    before = peak_rss_mb(fleet.router.pid)
    upload = httpx.post(f"{fleet.url}/api/blobs/{digest}", content=chunks(), timeout=120,
                        headers={**AUTH, "X-Herd-Node": "n0"})
    assert upload.status_code == 201, upload.text
    assert peak_rss_mb(fleet.router.pid) - before < 64
    assert httpx.head(f"{fleet.sim_url('n0')}/api/blobs/{digest}").status_code == 200


def test_an_upload_cut_short_leaves_nothing_behind(fleet: Fleet) -> None:
    """A client that goes away mid-upload: the node's upload ends too (no blob, no stuck
    connection), and the next upload of the same blob works."""
    data = b"GGUF" + b"\x07" * 500_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = (f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nX-Herd-Node: n1\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    port = int(fleet.url.rsplit(":", 1)[1])
    sim_port = int(fleet.sim_url("n1").rsplit(":", 1)[1])

    def to_node() -> int:  # the router's connections to n1 (kept-alive idle ones too)
        return sum(1 for c in psutil.Process(fleet.router.pid).net_connections("tcp")
                   if c.raddr and c.raddr.port == sim_port and c.status == "ESTABLISHED")

    idle = to_node()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + data[:100_000])
        wait_until(lambda: to_node() == idle + 1, timeout=5, message="the upload under way")
    wait_until(lambda: to_node() == idle, timeout=5, message="the upload to the node ended")
    assert httpx.head(f"{fleet.sim_url('n1')}/api/blobs/{digest}").status_code == 404
    upload = httpx.post(f"{fleet.url}/api/blobs/{digest}", content=data, timeout=10,
                        headers={**AUTH, "X-Herd-Node": "n1"})
    assert upload.status_code == 201, upload.text
    assert httpx.head(f"{fleet.sim_url('n1')}/api/blobs/{digest}").status_code == 200


def test_a_bad_upload_gets_the_nodes_own_error(fleet: Fleet) -> None:
    digest = "sha256:" + "0" * 64
    upload = httpx.post(f"{fleet.url}/api/blobs/{digest}", headers=AUTH, content=b"GGUF x",
                        timeout=10)
    assert upload.status_code == 400
    assert upload.json()["error"].startswith(f'digest mismatch, expected "{digest}"')
    bad = httpx.post(f"{fleet.url}/api/blobs/sha256:xyz", headers=AUTH, content=b"x",
                     timeout=10)
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid digest format"})
    with pytest.raises(ollama.ResponseError) as missing_blob:
        client(fleet.url).create(model="no-blob", files={"x.gguf": "sha256:" + "1" * 64})
    assert "no such file or directory" in missing_blob.value.error


def test_create_from_a_model_goes_to_a_node_that_has_it(fleet: Fleet) -> None:
    answer = client(fleet.url).create(model="tuned", from_="qwen3:0.6b", system="terse")
    assert answer.status == "success"
    assert "tuned:latest" in installed(fleet, "n0")  # only n0 has qwen3:0.6b


def test_push_streams_progress_from_a_node_that_has_the_model(fleet: Fleet) -> None:
    lines: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{fleet.url}/api/push", headers=AUTH, timeout=30,
                      json={"model": "smollm:135m"}) as response:
        assert response.status_code == 200
        assert response.headers["x-fleet-node"] == "n2"  # the only node with it
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0] == {"status": "retrieving manifest"}
    completed = [line["completed"] for line in lines if "completed" in line]
    assert len(completed) >= 3  # progress arrived line by line
    assert lines[-1] == {"status": "success"}
    assert client(fleet.url).push("llama3.2:3b").status == "success"
    with pytest.raises(ollama.ResponseError) as unknown:
        client(fleet.url).push("never-made")
    assert unknown.value.status_code == 404


# --- who may -----------------------------------------------------------------------------


def test_without_the_admin_token_every_change_is_refused_in_ollamas_shape(
    fleet: Fleet, tmp_path: Path,
) -> None:
    anonymous = client(fleet.url, token=None)
    calls = [
        lambda: anonymous.delete("llama3.2:3b"),
        lambda: anonymous.copy("llama3.2:3b", "x"),
        lambda: anonymous.create(model="x", from_="llama3.2:3b"),
        lambda: anonymous.push("llama3.2:3b"),
        lambda: anonymous.create_blob(gguf(tmp_path, "three.gguf")),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as refused:
            call()
        assert refused.value.status_code == 401
        assert "admin token" in refused.value.error
    wrong = client(fleet.url, token="guess")
    with pytest.raises(ollama.ResponseError) as refused:
        wrong.delete("llama3.2:3b")
    assert refused.value.status_code == 401
    head = httpx.head(f"{fleet.url}/api/blobs/sha256:{'2' * 64}", timeout=5)
    assert head.status_code == 401
    assert all("llama3.2:3b" in installed(fleet, n) for n in ("n0", "n1"))


def test_without_an_admin_token_a_foreign_web_page_cannot_make_changes(
    fleet: Fleet, tmp_path: Path, redis_url: str,
) -> None:
    """A router with no admin token trusts loopback; a browser on that machine is on
    loopback too, so a page of another origin must not ride on that trust."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    router = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                   redis_url, "--no-mdns", "--no-dashboard",
                   "--data-dir", str(tmp_path / "open")], tmp_path / "open.log",
                  env={"FLEET_REDIS_PREFIX": fleet.prefix, "FLEET_HEARTBEAT_TIMEOUT": "600",
                       "FLEET_HEARTBEAT_OFFLINE": "1200"})
    try:
        router.wait_http(f"{url}/healthz")
        body = {"source": "llama3.2:3b", "destination": "from-a-page"}
        page = httpx.post(f"{url}/api/copy", json=body, timeout=10,
                          headers={"Origin": "https://evil.example", "Content-Type": "text/plain"})
        assert page.status_code == 403
        assert "admin token" in page.json()["error"]
        own = httpx.post(f"{url}/api/copy", json=body, timeout=10,
                         headers={"Origin": url})  # the router's own page
        assert own.status_code == 200, own.text
        assert client(url, token=None).delete("from-a-page").status == "success"
    finally:
        router.stop()


# --- /api/version ------------------------------------------------------------------------


def test_version_is_the_oldest_servable_ollama_and_herds_own_is_in_a_header(
    fleet: Fleet,
) -> None:
    answer = httpx.get(f"{fleet.url}/api/version", timeout=5)
    assert answer.json() == {"version": "0.13.3"}
    assert answer.headers["x-herd-version"] == VERSION
    assert client(fleet.url, token=None)._client.get("/api/version").json()["version"] == "0.13.3"
    status = httpx.get(f"{fleet.url}/fleet/status", timeout=5).json()
    assert (status["herd_version"], status["ollama_version"]) == (VERSION, "0.13.3")
    try:
        beat(fleet, "n2", draining=True)  # the oldest node stops taking requests
        wait_until(lambda: httpx.get(f"{fleet.url}/api/version").json()["version"] == "0.14.0",
                   timeout=5, message="the version to follow the servable nodes")
    finally:
        beat(fleet, "n2")
    wait_until(lambda: httpx.get(f"{fleet.url}/api/version").json()["version"] == "0.13.3",
               timeout=5, message="the version back")


# --- CORS ------------------------------------------------------------------------------


def preflight(url: str, origin: str, headers: str = "content-type") -> httpx.Response:
    return httpx.options(url, timeout=5, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers})


def test_cors_preflights_from_allowed_origins_are_answered_on_every_client_api(
    fleet: Fleet,
) -> None:
    asked = "authorization, x-api-key, anthropic-version, anthropic-beta, content-type, " \
            "x-herd-tags, x-stainless-os, x-unknown"
    for path in ("/api/chat", "/v1/chat/completions", "/v1/messages", "/api/tags",
                 "/api/delete", "/"):
        answer = preflight(f"{fleet.url}{path}", ORIGIN, asked)
        assert answer.status_code == 204, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        allowed = {h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert allowed == {"authorization", "x-api-key", "anthropic-version", "anthropic-beta",
                           "content-type", "x-herd-tags", "x-stainless-os"}
        assert "POST" in answer.headers["access-control-allow-methods"]
    local = preflight(f"{fleet.url}/api/chat", "http://localhost:3000")
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_cors_refuses_other_origins_and_leaves_other_clients_alone(fleet: Fleet) -> None:
    refused = preflight(f"{fleet.url}/api/chat", "https://evil.example")
    assert refused.status_code == 403
    assert "not allowed" in refused.json()["error"]
    openai_refused = preflight(f"{fleet.url}/v1/chat/completions", "https://evil.example")
    assert openai_refused.json()["error"]["type"] == "invalid_request_error"
    body = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}],
            "stream": False}
    allowed = httpx.post(f"{fleet.url}/api/chat", json=body, headers={"Origin": ORIGIN},
                         timeout=30)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Fleet-Node" in allowed.headers["access-control-expose-headers"]
    for headers in ({}, {"Origin": "https://evil.example"}):
        plain = httpx.post(f"{fleet.url}/api/chat", json=body, headers=headers, timeout=30)
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers
    # the operator's endpoints are not for web pages
    fleet_api = preflight(f"{fleet.url}/fleet/status", ORIGIN)
    assert "access-control-allow-origin" not in fleet_api.headers
