"""Failover through real processes: errors before the first byte are retried elsewhere,
errors after it end the stream well-formed, a client that leaves frees its slot, and a
killed node costs no failed non-streaming request."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import redis as sync_redis

from shared.keys import Keys
from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import wait_until

MODEL = "llama3.2:3b"
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("failover")
    with start_fleet(tmp, redis_url, {"a": [], "b": [], "c": []}, parallel=2) as running:
        httpx.post(f"{running.sim_url('a')}/api/generate",
                   json={"model": MODEL, "prompt": "", "keep_alive": -1}, timeout=30)
        running.heartbeat_all()
        yield running


@pytest.fixture(autouse=True)
def healthy(fleet: Fleet) -> Iterator[None]:
    yield
    for node_id, (proc, _, _) in fleet.sims.items():
        if proc.alive():
            fleet.fault(node_id, "none")
            fleet.heartbeat(node_id)  # a good heartbeat clears router-observed failures


def chat(fleet: Fleet, **extra: object) -> httpx.Response:
    return httpx.post(f"{fleet.url}/api/chat", json={
        "model": MODEL, "messages": MSG, "stream": False, **extra}, timeout=60)


def test_a_5xx_before_the_first_byte_is_retried_with_true_headers(fleet: Fleet) -> None:
    assert chat(fleet).headers["x-fleet-node"] == "a"  # the loaded node is preferred
    fleet.fault("a", "error500")
    r = chat(fleet)
    assert r.status_code == 200, r.text
    assert r.headers["x-fleet-retries"] == "1"
    assert r.headers["x-fleet-node"] in {"b", "c"}
    assert r.headers["x-fleet-served-model"] == MODEL
    assert r.json()["done"] is True


def test_refused_connections_are_retried_for_streams_too(fleet: Fleet) -> None:
    # The node a generate request goes to first (a chat could differ: it may follow its
    # conversation to the node that served it last).
    probe = {"model": MODEL, "prompt": "x"}
    preferred = httpx.post(f"{fleet.url}/api/generate", json={**probe, "stream": False},
                           timeout=60).headers["x-fleet-node"]
    fleet.fault(preferred, "refuse", seconds=30)
    with httpx.stream("POST", f"{fleet.url}/api/generate", json=probe, timeout=60) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
        assert r.status_code == 200
        assert r.headers["x-fleet-node"] != preferred
        assert r.headers["x-fleet-retries"] == "1"
    assert lines[-1]["done"] is True


def test_every_node_failing_gives_a_clean_502(fleet: Fleet) -> None:
    for node_id in fleet.sims:
        fleet.fault(node_id, "error500")
    r = chat(fleet)
    assert r.status_code == 502
    assert "failed" in r.json()["error"]
    assert r.headers["x-fleet-retries"] == "3"
    oa = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(model=MODEL, messages=MSG)  # type: ignore[arg-type]
    oa.close()


def test_a_stream_that_breaks_after_the_first_byte_ends_with_an_error(fleet: Fleet) -> None:
    for node_id in fleet.sims:
        fleet.fault(node_id, "die_mid_stream", after_tokens=3)
    with httpx.stream("POST", f"{fleet.url}/api/chat", json={
            "model": MODEL, "messages": MSG, "options": {"num_predict": 50}},
            timeout=60) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert r.status_code == 200
    assert len(lines) >= 2
    assert "error" in lines[-1] and "error" not in lines[0]
    oa = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in oa.chat.completions.create(
                model=MODEL, messages=MSG, stream=True, max_tokens=50):  # type: ignore[call-overload]
            pass
    oa.close()


def test_a_client_that_leaves_cancels_upstream_and_frees_the_slot(
    fleet: Fleet, redis_url: str,
) -> None:
    for node_id in fleet.sims:
        fleet.fault(node_id, "hang", after_tokens=2)
    with httpx.stream("POST", f"{fleet.url}/api/chat", json={
            "model": MODEL, "messages": MSG}, timeout=60) as r:
        node = r.headers["x-fleet-node"]
        lines = r.iter_lines()  # kept: a dropped iterator would close the stream early
        assert json.loads(next(lines))["done"] is False
        assert fleet.sim_stats(node)["total"]["in_flight"] == 1
    # the router noticed, dropped the upstream connection and returned the slot
    wait_until(lambda: fleet.sim_stats(node)["total"]["in_flight"] == 0,
               message="the node to see the request cancelled")
    client = sync_redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.zcard(Keys(fleet.prefix).slots(node, MODEL)) == 0,
                   message="the slot to be released")
    finally:
        client.close()


def test_a_killed_node_costs_no_failed_non_streaming_request(fleet: Fleet) -> None:
    results: list[int] = []
    started = threading.Event()

    def one(i: int) -> int:
        r = httpx.post(f"{fleet.url}/api/generate", json={
            "model": MODEL, "prompt": f"p{i}", "stream": False,
            "options": {"num_predict": 40}}, timeout=60)
        started.set()
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(40)]
        started.wait(30)
        fleet.sims["b"][0].signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    assert results == [200] * 40
