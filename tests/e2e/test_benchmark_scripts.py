"""The benchmark scripts still run, with tiny settings (no timing is asserted: that is what
the scripts themselves measure, on a quiet machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--json", str(out)],
        capture_output=True, text=True, timeout=150, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_scheduling_replays_one_workload_through_each_policy(tmp_path: Path) -> None:
    result = run_script("scheduling", tmp_path, "--seeds", "1", "--rates", "1",
                        "--duration", "1.5", "--speed", "50", "--policies", "herd,round_robin")
    runs = {r["policy"]: r for r in result["runs"]}
    assert set(runs) == {"herd", "round_robin"}
    assert runs["herd"]["requests"] == runs["round_robin"]["requests"] > 0
    for run in runs.values():
        assert run["failed"] == 0, run
        assert sum(run["per_node"].values()) == run["completed"]
        assert run["latency_ms"]["p99"] >= run["latency_ms"]["p50"] > 0
        assert run["cold_loads"] >= 0 and run["cache_hits"] >= 0


def test_scale_compares_the_shortlist_with_every_node(tmp_path: Path) -> None:
    result = run_script("scale", tmp_path, "--nodes", "9", "--candidates", "0,4",
                        "--requests", "10", "--idle", "0.5", "--rank-iterations", "20",
                        "--interval", "1")
    rows = {int(r["limit"]): r for r in result["rows"]}
    assert rows[0]["candidates"] == 9 and rows[4]["candidates"] == 4
    for row in rows.values():
        assert row["nodes"] == 9
        assert row["rank_p50_ms"] > 0 and row["scripts_ms"] > 0 and row["rss_mb"] > 0
        assert row["fleet_status_ms"] > 0 and row["health_ms"] > 0


def test_streams_measures_direct_and_routed(tmp_path: Path) -> None:
    result = run_script("streams", tmp_path, "--streams", "4", "--seconds", "1",
                        "--rounds", "1", "--reply-tokens", "10", "--tokens-per-s", "200")
    assert result["direct_tps"] > 0 and result["routed_tps"] > 0
    assert result["router_cpu_ms_per_1000_chunks"] > 0


def test_cors_measures_the_layer_against_the_bare_app(tmp_path: Path) -> None:
    result = run_script("cors", tmp_path, "--calls", "200", "--rounds", "1")
    assert set(result["median_ns"]) == {"bare app", "CORS on, no Origin",
                                        "CORS on, allowed Origin"}
    assert all(value > 0 for value in result["median_ns"].values())
    assert result["added_ns"]["bare app"] == 0
