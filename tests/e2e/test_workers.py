"""`herd --workers 2`: two replicas on one port, both serving, all gone after a stop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import wait_until

MODEL = "llama3.2:3b"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("workers-fleet")
    with start_fleet(tmp, redis_url, {"n0": []}, env={"FLEET_WORKERS": "2"}) as running:
        yield running


def replica_of_a_new_connection(url: str) -> str:
    # A new client per call: SO_REUSEPORT spreads connections, not requests on one.
    with httpx.Client(timeout=5) as client:
        replica: str = client.get(f"{url}/healthz").json()["replica"]
        return replica


def test_two_workers_each_serve_requests(fleet: Fleet) -> None:
    workers = psutil.Process(fleet.router.pid).children()
    assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
    seen: set[str] = set()

    def both() -> bool:
        seen.add(replica_of_a_new_connection(fleet.url))
        return len(seen) == 2

    wait_until(both, timeout=30, interval=0.01, message="both workers to answer /healthz")
    # Inference too: each request's trace names the replica that proxied it.
    served: set[str] = set()

    def both_proxied() -> bool:
        with httpx.Client(timeout=30) as client:
            answer = client.post(f"{fleet.url}/api/chat", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "stream": False, "options": {"num_predict": 2}})
        assert answer.status_code == 200, answer.text
        traces = httpx.get(f"{fleet.url}/dashboard/api/traces?limit=200", timeout=5).json()
        served.update(t["replica_id"] for t in traces["traces"] if t.get("replica_id"))
        return served >= seen

    wait_until(both_proxied, timeout=60, interval=0.01, message="both workers to proxy")


def test_a_stop_leaves_no_worker_behind(fleet: Fleet) -> None:
    # Last in this module: it stops the module's router.
    children = psutil.Process(fleet.router.pid).children(recursive=True)
    assert len(children) >= 2
    assert fleet.router.stop(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert "a router worker exited" not in fleet.log()


def test_the_workers_benchmark_runs_with_tiny_settings() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "workers.py"
    done = subprocess.run(
        [sys.executable, str(script), "--workers", "2", "--seconds", "0.3",
         "--concurrency", "2"], capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simulator direct" in done.stdout and "router, 2 workers" in done.stdout
