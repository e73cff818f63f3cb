"""Pins through real routers and simulators: copies loaded and kept, reloaded after an
eviction and a node restart, a pin that cannot fit reported short, unpinning, with two
replicas only the leader acts; and a queue that outlasts a cold load gets a copy."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from shared.keys import Keys
from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import Proc, herd_bin, wait_until

pytestmark = pytest.mark.e2e

PINNED = "qwen3:8b"
ROUND = {"FLEET_HEARTBEAT_INTERVAL": "0.3"}  # the leader's rounds, quick for the test


def pins(fleet: Fleet, url: str | None = None) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{url or fleet.url}/fleet/pins", timeout=5)
    assert answer.status_code == 200, answer.text
    return {p["model"]: p for p in answer.json()["pins"]}


def keep_alive(fleet: Fleet, node_id: str, model: str) -> float | None:
    """The keep_alive the simulator holds the model with, None when it is not loaded."""
    runner = fleet.sim_stats(node_id)["loaded"].get(model)
    return None if runner is None else float(runner["keep_alive"])


def settle(fleet: Fleet, check: Any, message: str, timeout: float = 15.0) -> None:
    """Heartbeat (as agents would) until `check()` holds."""
    def done() -> bool:
        fleet.heartbeat_all()
        return bool(check())
    wait_until(done, timeout=timeout, interval=0.2, message=message)


def events(redis_url: str, fleet: Fleet, kind: str) -> list[dict[str, Any]]:
    client = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        rows = client.xrange(Keys(fleet.prefix).events())
    finally:
        client.close()
    found = [json.loads(fields["data"]) for _, fields in rows]
    return [e for e in found if e["kind"] == kind]


def restart_sim(fleet: Fleet, node_id: str) -> None:
    """The node's Ollama restarts on its port (bound again once the old socket lets go)."""
    proc, url, parallel = fleet.sims[node_id]
    proc.stop()
    for attempt in range(10):
        again = Proc(proc.args, proc.log_path.with_suffix(f".again{attempt}.log"))
        try:
            again.wait_http(f"{url}/api/version", timeout=10)
        except AssertionError:
            if "address already in use" not in again.output() or attempt == 9:
                raise
            again.stop()
            time.sleep(0.5)
            continue
        fleet.sims[node_id] = (again, url, parallel)
        return


def test_a_pin_is_kept_through_an_eviction_and_a_restart_and_unpinning_lets_go(
    tmp_path: Path, redis_url: str,
) -> None:
    with start_fleet(tmp_path, redis_url, {"n0": [], "n1": []}, env=ROUND) as fleet:
        answer = httpx.post(f"{fleet.url}/fleet/pins",
                            json={"model": "qwen3:8b", "copies": 2}, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["copies"] == 2
        settle(fleet, lambda: pins(fleet)[PINNED]["state"] == "satisfied",
               "the pin to be satisfied")
        assert pins(fleet)[PINNED]["loaded_on"] == ["n0", "n1"]
        for node_id in ("n0", "n1"):
            assert keep_alive(fleet, node_id, PINNED) == -1  # held forever

        # a request with no keep_alive resets the copy to the node's default: held again
        chat = httpx.post(f"{fleet.url}/api/chat", json={
            "model": PINNED, "messages": [{"role": "user", "content": "hi"}],
            "stream": False}, timeout=30)
        assert chat.status_code == 200, chat.text
        settle(fleet, lambda: all(keep_alive(fleet, n, PINNED) == -1 for n in ("n0", "n1")),
               "the served copy to be held forever again")

        # evicted (an operator unloads it): back within a round or two
        loaded_before = fleet.sim_stats("n0")["total"]["loads"]
        unloaded = httpx.post(f"{fleet.sim_url('n0')}/api/generate",
                              json={"model": PINNED, "keep_alive": 0}, timeout=10)
        assert unloaded.json()["done_reason"] == "unload"
        settle(fleet, lambda: keep_alive(fleet, "n0", PINNED) == -1
               and fleet.sim_stats("n0")["total"]["loads"] > loaded_before,
               "the evicted copy to be loaded again")

        # the node restarts empty: its copy comes back
        restart_sim(fleet, "n1")  # a new process: nothing loaded, its counters at zero
        settle(fleet, lambda: keep_alive(fleet, "n1", PINNED) == -1
               and fleet.sim_stats("n1")["total"]["loads"] >= 1,
               "the restarted node's copy to be loaded again")

        def loads() -> list[dict[str, Any]]:
            return [e for e in events(redis_url, fleet, "warm_copy")
                    if e["stage"] == "done" and e["action"] == "pin"]

        # two copies, the eviction, the restart (the event follows the node's answer)
        wait_until(lambda: len(loads()) >= 4, timeout=5, message="four pin loads")
        assert {e["node_id"] for e in loads()} == {"n0", "n1"}
        assert all("pinned" in e["reason"] for e in loads())
        assert any(e["state"] == "satisfied" for e in events(redis_url, fleet, "pin"))

        gone = httpx.delete(f"{fleet.url}/fleet/pins", params={"model": "qwen3"}, timeout=5)
        assert gone.status_code == 404  # qwen3:latest was never pinned
        gone = httpx.delete(f"{fleet.url}/fleet/pins", params={"model": PINNED}, timeout=5)
        assert gone.status_code == 200, gone.text
        assert gone.json()["removed"] is True and gone.json()["pins"] == []
        # back to the node's own keep_alive (5 minutes), still loaded
        settle(fleet, lambda: all(keep_alive(fleet, n, PINNED) == 300 for n in ("n0", "n1")),
               "the copies to go back to the node's keep_alive")
        assert pins(fleet) == {}
        assert any(e["state"] == "unpinned" for e in events(redis_url, fleet, "pin"))


def test_a_pin_that_cannot_be_kept_is_short_with_its_reason(
    tmp_path: Path, redis_url: str,
) -> None:
    # 4 GB nodes: qwen3:8b (5.4 GB) fits on neither
    small = ["--memory-gb", "4"]
    with start_fleet(tmp_path, redis_url, {"n0": small, "n1": small}, env=ROUND) as fleet:
        for body in ({"model": PINNED}, {"model": "ghost:1b"},
                     {"model": "llama3.2:3b", "nodes": ["n9"]}):
            answer = httpx.post(f"{fleet.url}/fleet/pins", json=body, timeout=5)
            assert answer.status_code == 200, answer.text

        def reasons() -> dict[str, str]:
            return {m: p["reason"] for m, p in pins(fleet).items() if p["state"] == "short"
                    and "not reconciled" not in p["reason"]}

        settle(fleet, lambda: len(reasons()) == 3, "every pin to be reported short")
        found = reasons()
        assert "no node has room" in found[PINNED]
        assert "model missing" in found["ghost:1b"]
        assert "node offline: n9" in found["llama3.2:3b"]
        assert keep_alive(fleet, "n0", PINNED) is None
        assert keep_alive(fleet, "n1", PINNED) is None
        # the health report says so too
        health = httpx.get(f"{fleet.url}/dashboard/api/health", timeout=10).json()
        short = [r for r in health["recommendations"] if r["check_id"] == "pins_short"]
        assert {r["data"]["model"] for r in short} == {PINNED, "ghost:1b", "llama3.2:3b"}


def test_bad_pins_are_refused_with_a_clear_error(tmp_path: Path, redis_url: str) -> None:
    env = {**ROUND, "FLEET_ADMIN_TOKEN": "sekret"}
    with start_fleet(tmp_path, redis_url, {"n0": []}, env=env) as fleet:
        admin = {"Authorization": "Bearer sekret"}
        assert httpx.post(f"{fleet.url}/fleet/pins", json={"model": PINNED},
                          timeout=5).status_code == 401
        cases = [
            ({"model": PINNED, "copies": 0}, "between 1 and"),
            ({"model": PINNED, "copies": 3, "nodes": ["n0"]}, "cannot fit on the 1 node"),
            ({"model": "bad name"}, "not a model name"),
            ({"copies": 2}, "model"),
            ({"model": PINNED, "copies": "two"}, "copies"),
        ]
        for body, words in cases:
            answer = httpx.post(f"{fleet.url}/fleet/pins", json=body, headers=admin, timeout=5)
            assert answer.status_code == 400, (body, answer.text)
            assert words in answer.json()["error"], answer.json()
        setting = httpx.post(f"{fleet.url}/dashboard/api/settings",
                             json={"pinned_models": {PINNED: {"copies": -1}}},
                             headers=admin, timeout=5)
        assert setting.status_code == 400 and "between 1 and" in setting.json()["error"]
        setting = httpx.post(f"{fleet.url}/dashboard/api/settings",
                             json={"pinned_models": {PINNED: 1}}, headers=admin, timeout=5)
        assert setting.status_code == 200, setting.text
        assert pins(fleet)[PINNED]["copies"] == 1
        gone = httpx.request("DELETE", f"{fleet.url}/fleet/pins", json={"model": PINNED},
                             headers=admin, timeout=5)
        assert gone.status_code == 200, gone.text

        # the herd CLI, with the admin token from the environment
        def herd(*args: str, token: str = "sekret") -> subprocess.CompletedProcess[str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
            return subprocess.run([herd_bin(), *args, "--router-url", fleet.url],
                                  capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL,
                                  env={**env, "FLEET_ADMIN_TOKEN": token})

        pinned = herd("pin", "llama3.2:3b", "--node", "n0")
        assert pinned.returncode == 0, pinned.stderr
        assert "pinned llama3.2:3b: 1 copy on n0" in pinned.stdout
        listed = herd("pin", "--list")
        assert listed.returncode == 0 and "llama3.2:3b" in listed.stdout
        refused = herd("pin", "qwen3:8b", token="wrong")
        assert refused.returncode == 1 and "401" in refused.stderr
        bad = herd("pin", "qwen3:8b", "--copies", "0")
        assert bad.returncode == 1 and "between 1 and" in bad.stderr
        unpinned = herd("unpin", "llama3.2:3b")
        assert unpinned.returncode == 0, unpinned.stderr
        assert "unpinned llama3.2:3b" in unpinned.stdout
        assert herd("unpin", "llama3.2:3b").returncode == 1  # not pinned any more
        assert pins(fleet) == {}


def test_with_two_replicas_only_the_leader_loads(tmp_path: Path, redis_url: str) -> None:
    with start_fleet(tmp_path, redis_url, {"n0": [], "n1": []}, env=ROUND,
                     replicas=2) as fleet:
        # pinned through the second replica; both replicas show it
        answer = httpx.post(f"{fleet.urls[1]}/fleet/pins",
                            json={"model": PINNED, "nodes": ["n1"]}, timeout=5)
        assert answer.status_code == 200, answer.text
        settle(fleet, lambda: all(pins(fleet, u).get(PINNED, {}).get("state") == "satisfied"
                                  for u in fleet.urls), "both replicas to see the pin kept")
        assert keep_alive(fleet, "n1", PINNED) == -1
        assert keep_alive(fleet, "n0", PINNED) is None  # only the node named
        for _ in range(5):
            fleet.heartbeat_all()
        loads = [r for r in fleet.sim_stats("n1")["last_requests"]
                 if r["path"] == "/api/generate" and r["body"].get("model") == PINNED]
        assert len(loads) == 1, loads  # one load, by one replica
        logs = [(tmp_path / d / "logs" / "herd.jsonl") for d in ("router-data", "router-data-1")]
        acted = [p for p in logs if p.exists() and "pin pin: qwen3:8b" in p.read_text()]
        assert len(acted) == 1


def test_a_queue_longer_than_a_cold_load_gets_a_copy_on_an_idle_node(
    tmp_path: Path, redis_url: str,
) -> None:
    slow = ["--tokens-per-s", "20"]  # 20 tokens: a request holds n0's one slot for 1 s
    with start_fleet(tmp_path, redis_url, {"n0": slow, "n1": slow}, parallel=1,
                     env=ROUND) as fleet:
        httpx.post(f"{fleet.sim_url('n0')}/api/generate",
                   json={"model": PINNED, "prompt": ""}, timeout=30)
        fleet.heartbeat_all()
        body = {"model": PINNED, "prompt": "hello", "stream": False,
                "options": {"num_predict": 20}}

        def ask() -> int:
            # held to n0, so they queue there while n1 stands idle
            return httpx.post(f"{fleet.url}/api/generate", json=body, timeout=60,
                              headers={"X-Herd-Node": "n0"}).status_code

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(ask) for _ in range(12)]
            # ~11 s of queue behind one slot against a cold load of a few seconds
            settle(fleet, lambda: keep_alive(fleet, "n1", PINNED) is not None,
                   "a queue copy on n1", timeout=20)
            assert [f.result() for f in futures] == [200] * 12
        assert keep_alive(fleet, "n1", PINNED) == 300  # the node's own keep_alive
        copies = [e for e in events(redis_url, fleet, "warm_copy") if e["action"] == "queue"]
        assert copies and copies[0]["node_id"] == "n1"
        assert "waiting: expected wait" in copies[0]["reason"]
        assert "longer than a cold load on n1" in copies[0]["reason"]
        assert len({e["node_id"] for e in copies}) == 1  # one copy: n0 has the model already
