"""The router's remaining promises, through real processes: client tokens in each API's
shape, stale streams cancelled with their slot freed, traces recorded exactly once, a stale
registry's 404 retried elsewhere, auto_pull, and the fleet-wide FIFO across two replicas."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import redis as sync_redis

from shared.keys import Keys
from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import Proc, free_port, herd_bin, wait_until

MODEL = "llama3.2:3b"
MISS = "qwen3:8b"  # made stale in the registry by one test; the others leave it alone
PULLED = "herdgap-pull:1b"  # no simulator has it until auto_pull puts it somewhere
TOKEN = "gap-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MSG = [{"role": "user", "content": "hello"}]
PULL_FAST = ["--pull-seconds-per-gb", "0.05"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("gaps")
    env = {"FLEET_CLIENT_TOKEN": TOKEN, "FLEET_STALE_TIMEOUT": "2"}
    with start_fleet(tmp, redis_url, {"a": PULL_FAST, "b": PULL_FAST}, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def api(fleet: Fleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url, headers=AUTH, timeout=60) as client:
        yield client


def chat(api: httpx.Client, model: str = MODEL, **extra: Any) -> httpx.Response:
    return api.post("/api/chat", json={"model": model, "messages": MSG, "stream": False,
                                       **extra})


def db_rows(data_dir: Path, ids: list[str]) -> list[tuple[str, str]]:
    """(request_id, status) of the traces with these ids in the router's latency.db."""
    path = data_dir / "latency.db"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=5)
    try:
        marks = ",".join("?" * len(ids))
        return con.execute(
            f"SELECT request_id, status FROM request_traces WHERE request_id IN ({marks})",
            ids).fetchall()
    except sqlite3.OperationalError:  # the recorder has not created the table yet
        return []
    finally:
        con.close()


def recorded(fleet: Fleet, ids: list[str]) -> list[tuple[str, str]]:
    """Poll until every id has reached latency.db; returns the rows."""
    return wait_until(lambda: (rows := db_rows(fleet.data_dir, ids))
                      and len({r[0] for r in rows}) == len(set(ids)) and rows,
                      timeout=20, message=f"{len(ids)} traces in latency.db")


def node_status(fleet: Fleet, node_id: str) -> dict[str, Any]:
    nodes = httpx.get(f"{fleet.url}/fleet/status", timeout=5).json()["nodes"]
    found: dict[str, Any] = next(n for n in nodes if n["node_id"] == node_id)
    return found


def events(fleet: Fleet, redis_url: str, kind: str) -> list[dict[str, Any]]:
    client = sync_redis.Redis.from_url(redis_url)
    try:
        rows = client.xrevrange(Keys(fleet.prefix).events(), count=500)
    finally:
        client.close()
    out = [json.loads(fields[b"data"]) for _, fields in rows]
    return [e for e in out if e["kind"] == kind]


# --- client_token -----------------------------------------------------------------------


def test_without_the_client_token_inference_is_401_in_each_api_shape(fleet: Fleet) -> None:
    r = httpx.post(f"{fleet.url}/api/chat", json={"model": MODEL, "messages": MSG},
                   timeout=10)
    assert r.status_code == 401
    assert isinstance(r.json()["error"], str)
    r = httpx.post(f"{fleet.url}/v1/chat/completions", json={"model": MODEL, "messages": MSG},
                   headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    r = httpx.post(f"{fleet.url}/api/generate", json={"model": MODEL, "prompt": "x"},
                   headers={"Authorization": f"Basic {TOKEN}"}, timeout=10)
    assert r.status_code == 401

    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=fleet.url).chat(model=MODEL, messages=MSG)
    assert refused.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="wrong", max_retries=0) \
            .chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]


def test_with_the_client_token_both_clients_work(fleet: Fleet) -> None:
    answer = ollama.Client(host=fleet.url, headers=AUTH).chat(model=MODEL, messages=MSG)
    assert answer.message.content
    oa = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=TOKEN, max_retries=0)
    completion = oa.chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    assert completion.choices[0].message.content
    assert [m.id for m in oa.models.list()]


# --- stale_timeout ----------------------------------------------------------------------


def test_a_stream_without_output_is_cancelled_after_stale_timeout(
    fleet: Fleet, api: httpx.Client,
) -> None:
    for node_id in fleet.sims:
        fleet.fault(node_id, "hang", after_tokens=2, paths=["/api/generate"])
    try:
        started = time.monotonic()
        with api.stream("POST", "/api/generate", json={
                "model": MODEL, "prompt": "tell me a long story",
                "options": {"num_predict": 200}}) as r:
            assert r.status_code == 200
            request_id = r.headers["x-herd-request-id"]
            lines = [json.loads(x) for x in r.iter_lines() if x]
        took = time.monotonic() - started
    finally:
        for node_id in fleet.sims:
            fleet.fault(node_id, "none")  # also wakes the hung handlers on the simulators
    assert 2.0 <= took < 8.0, took
    assert "error" in lines[-1] and "no output" in lines[-1]["error"]
    assert not any(line.get("done") for line in lines)

    def slots_back() -> bool:
        queues = httpx.get(f"{fleet.url}/fleet/status", timeout=5).json()["queues"]
        return bool(queues) and all(q["in_flight"] == 0 for q in queues.values())

    wait_until(slots_back, timeout=10, message="every slot back (in_flight 0)")
    [(_, status)] = recorded(fleet, [request_id])
    assert status in {"incomplete", "failed"}


# --- traces land once --------------------------------------------------------------------


def test_every_request_lands_in_latency_db_exactly_once(
    fleet: Fleet, api: httpx.Client,
) -> None:
    ids: list[str] = []
    for i in range(4):
        r = chat(api, options={"num_predict": 4})
        assert r.status_code == 200
        ids.append(r.headers["x-herd-request-id"])
        with api.stream("POST", "/api/generate", json={
                "model": MODEL, "prompt": f"n{i}", "options": {"num_predict": 4}}) as s:
            assert s.status_code == 200
            s.read()
            ids.append(s.headers["x-herd-request-id"])
        r = api.post("/v1/chat/completions", json={"model": MODEL, "messages": MSG,
                                                   "max_tokens": 4})
        assert r.status_code == 200
        ids.append(r.headers["x-herd-request-id"])
    assert len(set(ids)) == 12
    rows = recorded(fleet, ids)
    # one request more: the recorder reads the stream in order, so once this one is in,
    # any duplicate of the twelve would be too
    sentinel = chat(api).headers["x-herd-request-id"]
    recorded(fleet, [sentinel])
    rows = db_rows(fleet.data_dir, ids)
    assert len(rows) == 12
    assert {status for _, status in rows} == {"completed"}


# --- a stale registry's 404 is a routing miss ------------------------------------------------


def test_a_node_without_the_model_is_a_miss_retried_elsewhere(
    fleet: Fleet, api: httpx.Client, redis_url: str,
) -> None:
    httpx.post(f"{fleet.sim_url('a')}/api/generate",
               json={"model": MISS, "prompt": "", "keep_alive": -1}, timeout=30)
    fleet.heartbeat("a")  # the registry: MISS loaded on a, so a is preferred
    answer = httpx.request("DELETE", f"{fleet.control['a']}/api/delete",
                           json={"model": MISS}, timeout=10)
    assert answer.status_code == 200  # the registry does not know yet
    r = chat(api, MISS)
    assert r.status_code == 200, r.text
    assert r.headers["x-fleet-node"] == "b"
    assert r.headers["x-fleet-retries"] == "1"
    assert r.json()["done"] is True
    a = node_status(fleet, "a")
    assert a["status"] == "online" and a["router_failures"] == 0  # a miss, not a failure
    retries = [e for e in events(fleet, redis_url, "retry") if e["model"] == MISS]
    assert retries and retries[0]["node_id"] == "a" and "does not have" in retries[0]["reason"]
    # the routers corrected the registry: the next request goes straight to b
    r = chat(api, MISS)
    assert (r.status_code, r.headers["x-fleet-node"], r.headers["x-fleet-retries"]) == (
        200, "b", "0")

    fleet.heartbeat("b")
    httpx.request("DELETE", f"{fleet.control['b']}/api/delete", json={"model": MISS},
                  timeout=10).raise_for_status()
    r = chat(api, MISS)  # b was the last node said to have it: now it is the client's 404
    assert r.status_code == 404
    assert MISS in r.json()["error"]
    assert node_status(fleet, "b")["router_failures"] == 0
    r = api.post("/v1/chat/completions", json={"model": MISS, "messages": MSG})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert r.json()["error"]["code"] is None  # as Ollama words it


# --- auto_pull ---------------------------------------------------------------------------


def roomy(fleet: Fleet, node_id: str, available_gb: float) -> None:
    """A heartbeat of the simulator with its free memory set for the test."""
    payload = fleet.heartbeat(node_id)
    payload["memory"]["available_gb"] = available_gb
    httpx.post(f"{fleet.url}/heartbeat", json=payload, timeout=5).raise_for_status()


@contextlib.contextmanager
def auto_pull_on(fleet: Fleet) -> Iterator[None]:
    def put(value: bool) -> None:
        httpx.post(f"{fleet.url}/dashboard/api/settings", json={"auto_pull": value},
                   timeout=5).raise_for_status()

    put(True)
    try:
        yield
    finally:
        put(False)


def installed(fleet: Fleet, node_id: str) -> list[str]:
    names: list[str] = fleet.sim_stats(node_id)["installed"]
    return names


def test_auto_pull_off_is_a_404_and_on_pulls_onto_the_roomiest_node(
    fleet: Fleet, api: httpx.Client, redis_url: str,
) -> None:
    r = chat(api, PULLED)
    assert r.status_code == 404
    assert all(PULLED not in installed(fleet, n) for n in fleet.sims)

    roomy(fleet, "a", 40.0)  # by name alone b would win the tie; memory must decide
    roomy(fleet, "b", 8.0)
    with auto_pull_on(fleet), ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: chat(api, PULLED), range(3)))
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.headers["x-fleet-node"] == "a"
        assert r.headers["x-fleet-served-model"] == PULLED  # no substitution
    assert PULLED in installed(fleet, "a") and PULLED not in installed(fleet, "b")
    pulls = [q for q in fleet.sim_stats("a")["last_requests"] if q["path"] == "/api/pull"]
    assert len(pulls) == 1  # the three waiting requests shared one pull
    assert PULLED in node_status(fleet, "a")["models_available"]
    stages = [e["stage"] for e in events(fleet, redis_url, "auto_pull") if e["model"] == PULLED]
    assert stages == ["done", "started"]  # newest first

    r = chat(api, PULLED)  # auto_pull off again; the model is installed now
    assert (r.status_code, r.headers["x-fleet-node"]) == (200, "a")


# --- two replicas, one simulator: the fleet-wide FIFO ---------------------------------------


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str,
) -> Iterator[tuple[Fleet, str]]:
    tmp = tmp_path_factory.mktemp("replicas")
    with start_fleet(tmp, redis_url, {"solo": []}, parallel=2) as running:
        port = free_port()
        second = Proc(
            [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url", redis_url,
             "--no-mdns", "--no-dashboard", "--data-dir", str(tmp / "second-data")],
            tmp / "second.log",
            env={"FLEET_REDIS_PREFIX": running.prefix, "FLEET_HEARTBEAT_TIMEOUT": "600",
                 "FLEET_HEARTBEAT_OFFLINE": "1200"},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            second.wait_http(f"{url}/healthz")
            wait_until(lambda: httpx.get(f"{url}/fleet/status", timeout=2)
                       .json()["fleet"]["nodes_online"] == 1, message="second replica sees solo")
            yield running, url
        finally:
            second.stop()


def test_two_replicas_share_one_nodes_slots_first_come_first_served(
    replicas: tuple[Fleet, str],
) -> None:
    fleet, second = replicas
    urls = [fleet.url, second] * 6
    httpx.post(f"{fleet.sim_url('solo')}/api/generate",
               json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
    fleet.sim_reset("solo")

    def one(url: str) -> tuple[int, str]:
        r = httpx.post(f"{url}/api/chat", json={
            "model": MODEL, "messages": MSG, "stream": False,
            "options": {"num_predict": 60}}, timeout=60)
        return r.status_code, r.headers.get("x-fleet-node", "")

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, urls))
    assert results == [(200, "solo")] * 12
    counters = fleet.sim_stats("solo")["models"][MODEL]
    assert counters["requests"] == 12
    assert counters["max_in_flight"] <= 2, counters
    assert counters["max_in_flight"] == 2  # the two slots were used: the test had contention
