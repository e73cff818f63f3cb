"""Real routers, agents and simulators: mDNS discovery on 127.0.0.1, statuses, failover."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Proc, free_port, herd_bin, wait_until

INTERVAL, TIMEOUT, OFFLINE = 0.5, 1.5, 3.0
TIMING_ENV = {
    "FLEET_HEARTBEAT_INTERVAL": str(INTERVAL),
    "FLEET_HEARTBEAT_TIMEOUT": str(TIMEOUT),
    "FLEET_HEARTBEAT_OFFLINE": str(OFFLINE),
    "FLEET_MDNS_INTERFACES": "127.0.0.1",
}


class Cluster:
    """Processes of one test, all stopped at the end; a fleet name of its own so routers of
    other tests advertising on 127.0.0.1 at the same time are never joined."""

    def __init__(self, tmp: Path, redis_url: str, prefix: str,
                 wrap: Callable[[list[str]], list[str]] | None = None,
                 mdns_address: str = "127.0.0.1") -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.env = {**TIMING_ENV, "FLEET_NAME": f"t-{uuid.uuid4().hex[:8]}",
                    "FLEET_REDIS_PREFIX": prefix, "FLEET_MDNS_INTERFACES": mdns_address}
        self.procs: list[Proc] = []
        self._wrap = wrap or (lambda args: args)

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(self._wrap(args), self.tmp / f"{name}.log", env=self.env)
        self.procs.append(proc)
        return proc

    def sim(self, name: str, port: int, host: str = "127.0.0.1", wait: bool = True) -> Proc:
        proc = self._start(f"sim-{name}", [sys.executable, "-m", "services.sim", "--host", host,
                                           "--port", str(port), "--node-name", name])
        if wait:
            proc.wait_http(f"http://{host}:{port}/api/version")
        return proc

    def router(self, name: str, port: int, host: str = "127.0.0.1", wait: bool = True) -> Proc:
        redis = ["--redis-url", self.redis_url] if self.redis_url else []  # else embedded
        proc = self._start(f"router-{name}", [
            herd_bin("herd"), "--host", host, "--port", str(port), *redis,
            "--no-dashboard", "--data-dir", str(self.tmp / f"router-{name}")])
        if wait:
            proc.wait_http(f"http://{host}:{port}/healthz")
        return proc

    def agent(self, name: str, ollama: str, *extra: str) -> Proc:
        return self._start(f"agent-{name}", [
            herd_bin("herd-node"), "--node-id", name, "--ollama-host", ollama,
            "--data-dir", str(self.tmp / f"agent-{name}"), *extra])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, redis_url, prefix)
    try:
        yield c
    finally:
        c.stop()


def fleet_nodes(router: str) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{router}/fleet/status", timeout=2.0).json()
    return {n["node_id"]: n for n in data["nodes"]}


def node_where(router: str, node_id: str, check: Callable[[dict[str, Any]], bool],
               timeout: float, message: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        node = fleet_nodes(router).get(node_id)
        return node if node is not None and check(node) else None
    return wait_until(probe, timeout=timeout, message=message)


def test_agents_find_router_by_mdns_and_statuses_follow(cluster: Cluster) -> None:
    sim_ports = {"n1": free_port(), "n2": free_port()}
    # Everything starts at once (startup is most of this test's time); agents find the
    # router whenever it begins advertising. The 10 s count from the router being up.
    sims = {name: cluster.sim(name, port, wait=False) for name, port in sim_ports.items()}
    router = f"http://127.0.0.1:{(router_port := free_port())}"
    router_proc = cluster.router("r1", router_port, wait=False)
    agents = {name: cluster.agent(name, f"http://127.0.0.1:{port}")
              for name, port in sim_ports.items()}
    router_proc.wait_http(f"{router}/healthz", timeout=30.0)
    started = time.monotonic()

    for name, port in sim_ports.items():
        node = node_where(router, name, lambda n: n["status"] == "online" and n["servable"],
                          timeout=10.0, message=f"{name} online by mDNS")
        assert node["ollama_url"] == f"http://127.0.0.1:{port}"
        assert "llama3.2:3b" in node["models_available"]
    joined = time.monotonic() - started
    assert joined < 10.0

    # Ollama down: still registered and online, but not servable; the other node unaffected.
    sims["n1"].stop()
    node = node_where(router, "n1", lambda n: not n["ollama_up"], timeout=4 * INTERVAL + 2,
                      message="n1 reports Ollama down")
    assert node["status"] == "online" and node["servable"] is False
    assert node["models_available"] == []
    assert fleet_nodes(router)["n2"]["servable"] is True

    # Agent stopped: a draining goodbye, then silence: degraded, then offline, on time.
    agents["n1"].signal(signal.SIGTERM)
    agents["n1"].process.wait(10)
    assert agents["n1"].process.returncode == 0
    assert fleet_nodes(router)["n1"]["draining"] is True
    # Silence as the router measures it (Redis's clock) when each status first shows.
    silence_at: dict[str, float] = {}
    deadline = time.monotonic() + OFFLINE + 8
    while "offline" not in silence_at and time.monotonic() < deadline:
        node = fleet_nodes(router)["n1"]
        silence_at.setdefault(node["status"], node["seconds_since_heartbeat"])
        time.sleep(0.05)
    assert "degraded" in silence_at and "offline" in silence_at, silence_at
    # The sweep runs every second, so a change shows up to ~1 s after its threshold.
    assert TIMEOUT <= silence_at["degraded"] <= TIMEOUT + 2.0, silence_at
    assert OFFLINE <= silence_at["offline"] <= OFFLINE + 2.0, silence_at
    assert fleet_nodes(router)["n2"]["status"] == "online"

    # Both back: online and servable again, not draining.
    cluster.sim("n1", sim_ports["n1"], wait=False)
    cluster.agent("n1", f"http://127.0.0.1:{sim_ports['n1']}")
    node = node_where(router, "n1", lambda n: n["servable"], timeout=10.0,
                      message="n1 back online")
    assert node["status"] == "online" and node["draining"] is False and node["ollama_up"]

    summary = httpx.get(f"{router}/fleet/status").json()["fleet"]
    assert summary["nodes_online"] == 2 and summary["nodes_servable"] == 2


def current_router(agent_log: Path) -> str | None:
    """The router the agent last moved to, from its JSON log."""
    url = None
    with contextlib.suppress(FileNotFoundError):
        for line in agent_log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("msg", "").startswith("posting heartbeats to"):
                url = entry["router"]
    return url


def test_agent_moves_to_another_replica_when_its_router_dies(cluster: Cluster) -> None:
    # With a node token, every heartbeat below also proves the agent sends it.
    cluster.env["FLEET_NODE_TOKEN"] = "node-secret"
    sim_port = free_port()
    cluster.sim("n1", sim_port, wait=False)
    ports = [free_port(), free_port()]
    routers = {f"http://127.0.0.1:{p}": cluster.router(f"r{i}", p, wait=False)
               for i, p in enumerate(ports)}
    cluster.agent("n1", f"http://127.0.0.1:{sim_port}")
    for url, proc in routers.items():
        proc.wait_http(f"{url}/healthz")
    log = cluster.tmp / "agent-n1" / "logs" / "herd-node.jsonl"
    used = wait_until(lambda: current_router(log), timeout=10.0, message="agent posting")
    other = next(url for url in routers if url != used)
    assert httpx.post(f"{other}/heartbeat", json={"node_id": "intruder"}).status_code == 401
    node_where(other, "n1", lambda n: n["status"] == "online", timeout=5.0,
               message="the other replica sees the node (shared Redis)")

    routers[used].kill()  # no goodbye, no mDNS withdrawal: the worst case
    killed = time.time()

    def moved() -> float | None:
        node = fleet_nodes(other)["n1"]
        return node["last_seen"] if node["last_seen"] > killed else None

    first_beat = wait_until(moved, timeout=4 * INTERVAL + 3,
                            message="a heartbeat through the other replica")
    # The first heartbeat after the kill reaches the other replica within two intervals.
    assert first_beat - killed <= 2 * INTERVAL, first_beat - killed
    wait_until(lambda: current_router(log) == other, timeout=2.0,
               message="agent log names the new router")
    assert fleet_nodes(other)["n1"]["status"] == "online"
