"""Faults switched at run time (POST /sim/fault) and at start (--fault), seen by clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.helpers import free_port, http_ok, wait_until
from tests.simproc import SimProc, sim_fault, sim_reset, sim_stats, start_sim

MODEL = "llama3.2:3b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_predict": 20}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-faults"), "faults", models=MODEL,
                     tokens_per_s=500, control_port=free_port())
    yield proc
    proc.stop()


@pytest.fixture
def url(sim: SimProc) -> Iterator[str]:
    sim_fault(sim.url, "none")
    sim_reset(sim.url)
    yield sim.url
    sim_fault(sim.control_url or sim.url, "none")
    wait_until(lambda: http_ok(sim.url + "/api/version"), timeout=5, message="listening")


def test_error500_with_paths_and_count(url: str) -> None:
    sim_fault(url, "error500", paths=["/api/chat", "/v1/"], count=2)
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(**CHAT)
    assert info.value.status_code == 500 and info.value.error == "simulated internal error"
    assert client.list().models  # /api/tags is not a listed path
    oai = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as oai_info:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}])
    assert oai_info.value.body == {"message": "simulated internal error", "type": "api_error",
                                   "param": None, "code": None}
    assert client.chat(**CHAT).done  # count=2 used up: healthy again
    assert sim_stats(url)["faults_triggered"] >= 2


def test_slow_multiplies_durations_and_delays(url: str) -> None:
    client = ollama.Client(host=url)
    client.chat(**CHAT)  # loaded
    normal = client.chat(**CHAT)
    sim_fault(url, "slow", factor=5, delay_s=0.3)
    started = time.monotonic()
    slow = client.chat(**CHAT)
    assert time.monotonic() - started >= 0.3
    assert (slow.eval_duration or 0) > 3 * (normal.eval_duration or 1)
    assert (slow.total_duration or 0) > (normal.total_duration or 0)


def test_hang_sends_nothing_until_switched(sim: SimProc, url: str) -> None:
    sim_fault(url, "hang", paths=["/api/chat"])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/api/chat", json=CHAT, timeout=0.5)
    assert httpx.get(url + "/api/tags").status_code == 200
    assert sim_stats(url)["faults_triggered"] == 1  # /api/tags was not hit; chat was


def test_hang_mid_stream_after_some_tokens(url: str) -> None:
    sim_fault(url, "hang", after_tokens=3, paths=["/api/chat"])
    lines: list[str] = []
    with pytest.raises(httpx.ReadTimeout), httpx.stream(
            "POST", url + "/api/chat", json=CHAT, timeout=0.5) as response:
        lines.extend(line for line in response.iter_lines() if line)
    assert len(lines) == 3 and '"done":false' in lines[-1]


def test_die_mid_stream_cuts_the_connection(url: str) -> None:
    sim_fault(url, "die_mid_stream", after_tokens=4)
    client = ollama.Client(host=url)
    received = []
    with pytest.raises(httpx.HTTPError):  # incomplete chunked body
        for part in client.chat(**CHAT, stream=True):
            received.append(part)
    assert len(received) == 4 and not received[-1].done
    with pytest.raises(httpx.HTTPError):
        httpx.post(url + "/api/chat", json={**CHAT, "stream": False})
    oai = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(oai.chat.completions.create(model=MODEL, stream=True, max_tokens=20,
                                         messages=[{"role": "user", "content": "a"}]))
    assert sim_stats(url)["models"][MODEL]["failed"] >= 2


def test_refuse_looks_like_connection_refused(sim: SimProc, url: str) -> None:
    control = sim.control_url
    assert control is not None
    with httpx.Client(base_url=url) as kept:
        assert kept.get("/api/version").status_code == 200  # a pooled keep-alive connection
        assert sim_fault(control, "refuse")["mode"] == "refuse"
        with pytest.raises(httpx.TransportError):
            kept.get("/api/version")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/version")
    with pytest.raises(ConnectionError):  # what the ollama client raises when refused
        ollama.Client(host=url).list()
    assert sim_stats(control)["listening"] is False
    sim_fault(control, "none")
    assert httpx.get(url + "/api/version").status_code == 200


def test_refuse_for_some_seconds_comes_back_alone(url: str) -> None:
    sim_fault(url, "refuse", seconds=0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/version")
    wait_until(lambda: http_ok(url + "/api/version"), timeout=5, message="back after refuse")
    assert sim_stats(url)["fault"]["mode"] == "none"


def test_fault_flag_at_start(tmp_path: Path) -> None:
    proc = start_sim(tmp_path, "flagged", models=MODEL, fault="error500:paths=/api/chat")
    try:
        response = httpx.post(proc.url + "/api/chat", json=CHAT)
        assert response.status_code == 500 and response.json() == {
            "error": "simulated internal error"}
        assert httpx.get(proc.url + "/api/tags").status_code == 200
    finally:
        proc.stop()


def test_bad_fault_is_rejected(url: str) -> None:
    response = httpx.post(url + "/sim/fault", json={"mode": "explode"})
    assert response.status_code == 400 and "error" in response.json()
