"""`herd bench` against a small simulated fleet: its figures, and the run the dashboard lists."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.proxy_fleet import Fleet, start_fleet
from tests.helpers import herd_bin

SMALL = "llama3.2:3b"
BIG = "qwen3:8b"
ADMIN = "bench-admin-token"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("bench-fleet")
    # Nothing loaded yet: the first request of each model cold-loads it somewhere.
    with start_fleet(tmp, redis_url, {"n0": [], "n1": []}, parallel=2,
                     env={"FLEET_ADMIN_TOKEN": ADMIN}) as running:
        yield running


def bench(fleet: Fleet, *args: str, admin: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    if admin is not None:
        env["FLEET_ADMIN_TOKEN"] = admin
    return subprocess.run(
        [herd_bin(), "bench", "--router-url", fleet.url, *args],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )


def stored(fleet: Fleet, run_id: str) -> dict[str, Any] | None:
    runs = httpx.get(f"{fleet.url}/dashboard/api/benchmarks", timeout=5).json()["runs"]
    return next((r for r in runs if r["run_id"] == run_id), None)


def test_bench_measures_two_models_and_stores_the_run(fleet: Fleet) -> None:
    done = bench(fleet, "--model", SMALL, "--model", BIG, "--requests", "8",
                 "--concurrency", "2", "--max-tokens", "8", "--prompt-tokens", "16",
                 "--stream", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert (run["status"], run["source"], run["done"], run["failed"]) == (
        "completed", "cli", 8, 0)
    assert run["models"] == [SMALL, BIG] and run["stream"] is True
    assert {m: f["requests"] for m, f in run["per_model"].items()} == {SMALL: 4, BIG: 4}
    # Every answer named its node (X-Fleet-Node), and the per-node table adds up.
    assert set(run["per_node"]) <= {"n0", "n1"}
    assert sum(f["requests"] for f in run["per_node"].values()) == 8
    assert sum(run["by_node"].values()) == 8
    # Both models started unloaded: each cold-loaded at least once (load_duration).
    assert run["cold_loads"] >= 2
    assert all(f["cold_loads"] >= 1 for f in run["per_model"].values())
    for figures in (run, *run["per_model"].values()):
        assert 0 < figures["ttft_ms"]["p50"] <= figures["latency_ms"]["p99"]
        assert figures["latency_ms"]["p50"] <= figures["latency_ms"]["p95"] \
            <= figures["latency_ms"]["p99"]
    assert run["requests_per_s"] > 0 and run["tokens_per_s"] > 0
    assert 0 < sum(f["completion_tokens"] for f in run["per_model"].values()) <= 8 * 8

    listed = stored(fleet, run["run_id"])
    assert listed is not None, "the run is not in /dashboard/api/benchmarks"
    assert listed["source"] == "cli"
    assert listed["per_node"] == run["per_node"] and listed["ttft_ms"] == run["ttft_ms"]


def test_bench_tables_and_a_duration_bound_run(fleet: Fleet) -> None:
    done = bench(fleet, "--model", SMALL, "--duration", "1", "--concurrency", "2",
                 "--max-tokens", "4")
    assert done.returncode == 0, done.stderr
    assert "Per model" in done.stdout and "Per node" in done.stdout
    assert SMALL in done.stdout


def test_a_run_the_router_refuses_to_store_fails_the_command(fleet: Fleet) -> None:
    done = bench(fleet, "--model", SMALL, "--requests", "1", "--json", admin="wrong")
    assert done.returncode == 1
    assert "not stored" in done.stderr and "401" in done.stderr
    assert stored(fleet, json.loads(done.stdout)["run_id"]) is None


def test_bad_arguments_get_a_clear_message(fleet: Fleet) -> None:
    done = bench(fleet, "--model", SMALL, "--requests", "0")
    assert done.returncode == 2
    assert "requests must be from 1" in done.stderr
