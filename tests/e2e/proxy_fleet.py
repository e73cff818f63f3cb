"""A real fleet for the request-path e2e tests: simulators, one router (or several replicas
sharing one Redis prefix), heartbeats by hand."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis

from shared.keys import Keys
from tests.helpers import Proc, free_port, herd_bin, wait_until

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "herd-heartbeat-example.json"
FAST_SIM = ["--tokens-per-s", "400", "--load-base-seconds", "0.05",
            "--load-seconds-per-gb", "0.05", "--prompt-tps", "0"]


@dataclass
class Fleet:
    url: str
    router: Proc
    data_dir: Path
    prefix: str
    sims: dict[str, tuple[Proc, str, int]] = field(default_factory=dict)  # id -> proc, url, par
    # /sim/* on a second port: it keeps answering while the 'refuse' fault closes the main one
    control: dict[str, str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)  # every replica's URL; url is the first
    node_token: str = ""  # sent with heartbeats when the router wants one

    def heartbeat(self, node_id: str) -> dict[str, Any]:
        """Post a heartbeat describing what the simulator really has (disk and memory)."""
        _, sim_url, parallel = self.sims[node_id]
        payload = json.loads(EXAMPLE.read_text())
        control = self.control[node_id]
        tags = httpx.get(f"{control}/api/tags", timeout=5).json()["models"]
        ps = httpx.get(f"{control}/api/ps", timeout=5).json()["models"]
        machine = httpx.get(f"{control}/sim/node", timeout=5).json()
        payload["node_id"] = node_id
        payload["ollama_host"] = sim_url
        payload["memory"].update(machine["memory"])
        payload["ollama"]["max_loaded_models"] = machine["max_loaded_models"]
        payload["ollama"].update({
            "models_available": [m["name"] for m in tags],
            "models_available_sizes": {m["name"]: m["size"] / 1e9 for m in tags},
            "models_loaded": [{
                "name": m["name"], "size_gb": m["size"] / 1e9,
                "context_length": m.get("context_length", 0),
                "expires_at": m.get("expires_at", ""),
            } for m in ps],
            "num_parallel": parallel,
        })
        headers = {"Authorization": f"Bearer {self.node_token}"} if self.node_token else {}
        answer = httpx.post(f"{self.url}/heartbeat", json=payload, headers=headers, timeout=5)
        assert answer.status_code == 200, answer.text
        return payload

    def heartbeat_all(self) -> None:
        for node_id in self.sims:
            self.heartbeat(node_id)

    def sim_url(self, node_id: str) -> str:
        return self.sims[node_id][1]

    def sim_stats(self, node_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.control[node_id]}/sim/stats", timeout=5).json()

    def sim_reset(self, node_id: str) -> None:
        httpx.post(f"{self.control[node_id]}/sim/reset", json={}, timeout=5)

    def fault(self, node_id: str, mode: str, **params: Any) -> None:
        answer = httpx.post(f"{self.control[node_id]}/sim/fault",
                            json={"mode": mode, **params}, timeout=5)
        assert answer.status_code == 200, answer.text

    def log(self) -> str:
        path = self.data_dir / "logs" / "herd.jsonl"
        return path.read_text() if path.exists() else ""


def _sees(url: str, nodes: int) -> bool:
    return len(httpx.get(f"{url}/fleet/status", timeout=5).json()["nodes"]) == nodes


@contextlib.contextmanager
def start_fleet(
    tmp: Path, redis_url: str, nodes: dict[str, list[str]], *, parallel: int = 2,
    env: dict[str, str] | None = None, node_token: str = "", replicas: int = 1,
) -> Iterator[Fleet]:
    """Simulators (id -> extra flags), routers on loopback (`replicas` of them, one Redis
    prefix), each node registered and seen by every replica."""
    procs: list[Proc] = []
    prefix = f"herdtest:{uuid.uuid4().hex[:10]}:"
    try:
        sims: dict[str, tuple[Proc, str, int]] = {}
        control: dict[str, str] = {}
        for node_id, flags in nodes.items():
            port, control_port = free_port(), free_port()
            control[node_id] = f"http://127.0.0.1:{control_port}"
            proc = Proc([herd_bin(), "sim", "--host", "127.0.0.1", "--port", str(port),
                         "--control-port", str(control_port),
                         "--node-name", node_id, "--num-parallel", str(parallel),
                         *FAST_SIM, *flags], tmp / f"sim-{node_id}.log")
            procs.append(proc)
            sims[node_id] = (proc, f"http://127.0.0.1:{port}", parallel)
        for node_id, (proc, url, _) in sims.items():
            proc.wait_http(f"{url}/api/version")
            proc.wait_http(f"{control[node_id]}/api/version")  # heartbeats read it
        routers: list[tuple[Proc, str]] = []
        for i in range(replicas):
            port = free_port()
            suffix = f"-{i}" if i else ""
            router = Proc(
                [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--redis-url",
                 redis_url, "--no-mdns", "--no-dashboard",
                 "--data-dir", str(tmp / f"router-data{suffix}")],
                tmp / f"router{suffix}.log",
                env={"FLEET_REDIS_PREFIX": prefix, "FLEET_HEARTBEAT_TIMEOUT": "600",
                     "FLEET_HEARTBEAT_OFFLINE": "1200", **(env or {})},
            )
            procs.append(router)
            routers.append((router, f"http://127.0.0.1:{port}"))
        for router, url in routers:
            router.wait_http(f"{url}/healthz")
        first, url = routers[0]
        fleet = Fleet(url, first, tmp / "router-data", prefix, sims, control,
                      urls=[u for _, u in routers], node_token=node_token)
        fleet.heartbeat_all()
        wait_until(lambda: all(_sees(u, len(sims)) for _, u in routers[1:]), timeout=10,
                   message="every replica to see the fleet")
        yield fleet
    finally:
        # a test may have replaced a simulator with a new process (a restart): stop that too
        restarted = [proc for proc, _, _ in sims.values() if proc not in procs]
        for proc in [*reversed(procs), *restarted]:
            proc.stop()
        client = sync_redis.Redis.from_url(redis_url)
        try:
            batch = list(client.scan_iter(match=Keys(prefix).match(), count=500))
            if batch:
                client.delete(*batch)
        finally:
            client.close()
