"""`herd demo` as a real process: the fleet comes up with load, and every child dies with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from services.demo import NODES
from tests.helpers import Proc, free_port, herd_bin, http_ok, wait_until


def _start_demo(tmp_path: Path, *extra: str) -> tuple[Proc, str, int]:
    port, dashboard_port = free_port(), free_port()
    proc = Proc([herd_bin(), "demo", "--port", str(port), "--dashboard-port",
                 str(dashboard_port), "--data-dir", str(tmp_path / "demo"), *extra],
                tmp_path / "demo.log")
    try:
        wait_until(lambda: "Press Ctrl-C" in proc.output() or not proc.alive(), timeout=90,
                   message="the demo's banner")
    except AssertionError:
        proc.kill()
        raise
    assert proc.alive(), proc.output()
    return proc, f"http://127.0.0.1:{port}", dashboard_port


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _all_gone(processes: list[psutil.Process]) -> bool:
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def _kill_leftovers(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def test_demo_runs_a_loaded_fleet_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    proc, url, dashboard_port = _start_demo(tmp_path, "--rate", "4")
    children: list[psutil.Process] = []
    try:
        status = httpx.get(url + "/fleet/status", timeout=10).json()
        assert {n["node_id"] for n in status["nodes"]} == {"gpu-large", "gpu-medium", "laptop"}
        assert status["fleet"]["nodes_online"] == 3
        # each agent reports the machine its simulator models (/sim/node), not the host
        memory = {n["node_id"]: n["memory"] for n in status["nodes"]}
        assert {name: m["total_gb"] for name, m in memory.items()} == \
            {n.name: n.memory_gb for n in NODES}
        for m in memory.values():
            assert abs(m["available_gb"] - (m["total_gb"] - m["used_gb"])) < 0.02, memory
        reported = {n["node_id"]: (n["max_loaded_models"], n["num_parallel_reported"],
                                   n["cpu"]["cores_physical"], n["disk"]["total_gb"])
                    for n in status["nodes"]}
        assert reported == {n.name: (n.max_loaded_models, n.num_parallel, n.cpu_cores,
                                     n.disk_gb) for n in NODES}
        assert f"http://localhost:{dashboard_port}" in proc.output()
        assert "from openai import OpenAI" in proc.output()
        assert "curl -s" in proc.output()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{dashboard_port}/_stcore/health"),
                   timeout=60, message="the demo's dashboard")
        redirect = httpx.get(url + "/dashboard", timeout=10)
        assert redirect.status_code == 302
        assert redirect.headers["location"] == f"http://127.0.0.1:{dashboard_port}/"

        def served() -> int:
            queues = httpx.get(url + "/fleet/status", timeout=10).json()["queues"]
            return sum(q["done"] for q in queues.values())

        wait_until(lambda: served() >= 3, timeout=60, message="background load to be served")
        _load_outlives_a_key_and_says_when_it_fails(proc, url, tmp_path / "demo", served)
        children = _descendants(proc.pid)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "streamlit" in names
        assert names.count("services.cli sim") == 3 and names.count("services.node.cli") == 3
        proc.signal(signal.SIGINT)
        assert proc.process.wait(30) == 0, proc.output()[-3000:]
        wait_until(lambda: _all_gone(children), timeout=10, message="every child to stop")
        assert "requests sent" in proc.output()
    finally:
        proc.stop()
        _kill_leftovers(children)


def _load_outlives_a_key_and_says_when_it_fails(
    proc: Proc, url: str, data_dir: Path, served: Callable[[], int],
) -> None:
    """Someone tries `herd keys create`: inference closes to everyone else, the demo's own
    load goes on (it sends the router's admin token). A load that fails says so at once."""
    token_file = data_dir / "admin-token"
    assert f'export FLEET_ADMIN_TOKEN="$(cat {token_file})"' in proc.output()
    token = token_file.read_text().strip()
    assert token not in proc.output()
    chat = {"model": "llama3.2:3b", "stream": False,
            "messages": [{"role": "user", "content": "hi"}]}
    # The banner's curl needs no key: inference is open until a key exists.
    assert httpx.post(url + "/api/chat", json=chat, timeout=30).status_code == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    made = subprocess.run([herd_bin(), "keys", "--router-url", url, "create", "visitor"],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**env, "FLEET_ADMIN_TOKEN": token})
    assert made.returncode == 0, made.stderr
    assert httpx.post(url + "/api/chat", json=chat, timeout=30).status_code == 401
    before = served()
    wait_until(lambda: served() >= before + 4, timeout=60,
               message="the demo's load to go on once a key exists")
    assert "failing" not in proc.output(), proc.output()[-2000:]
    # Bodies over a tiny limit: every load request gets 413, and the demo says why, now.
    admin = {"Authorization": f"Bearer {token}"}
    assert httpx.post(url + "/dashboard/api/settings", json={"max_body_mb": 0.00001},
                      headers=admin, timeout=10).status_code == 200
    wait_until(lambda: "background requests are failing: HTTP 413" in proc.output(),
               timeout=30, message="the demo to say its load fails")
    assert httpx.post(url + "/dashboard/api/settings", json={"max_body_mb": 64},
                      headers=admin, timeout=10).status_code == 200
    wait_until(lambda: "background requests succeed again" in proc.output(), timeout=30,
               message="the demo to say its load recovered")


@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_killed_demo_leaves_no_process_behind(tmp_path: Path, sig: int) -> None:
    proc, url, _ = _start_demo(tmp_path, "--no-load")
    children = _descendants(proc.pid)
    try:
        assert len(children) >= 8, [c.cmdline() for c in children]  # 7 direct + Redis, dashboard
        proc.signal(sig)
        proc.process.wait(10)
        wait_until(lambda: _all_gone(children), timeout=20,
                   message="the parent-death signal to stop every child")
        assert not http_ok(url + "/healthz")
    finally:
        proc.stop()
        _kill_leftovers(children)
