"""The dashboard as a process: `herd` starts it and takes it down, even when killed; alone too."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psutil

from tests.helpers import Proc, free_port, herd_bin, http_ok, wait_until


def _streamlit_child(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children(recursive=True):
        if "streamlit" in " ".join(child.cmdline()):
            return child
    return None


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_herd_starts_its_dashboard_which_dies_with_it_even_on_kill_9(tmp_path: Path) -> None:
    port, dashboard_port = free_port(), free_port()
    router = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns",
                   "--dashboard-port", str(dashboard_port), "--data-dir", str(tmp_path / "d")],
                  tmp_path / "herd.log")
    child = None
    try:
        router.wait_http(f"http://127.0.0.1:{port}/healthz")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{dashboard_port}/_stcore/health"),
                   timeout=60, message="the dashboard herd started")
        child = _streamlit_child(router.pid)
        assert child is not None
        args = child.cmdline()
        assert args[args.index("--browser.gatherUsageStats") + 1] == "false"
        assert args[args.index("--router-url") + 1] == f"http://127.0.0.1:{port}"
        link = httpx.get(f"http://127.0.0.1:{port}/dashboard", follow_redirects=False)
        assert link.headers["location"] == f"http://127.0.0.1:{dashboard_port}/"
        router.signal(signal.SIGKILL)
        router.process.wait(10)
        wait_until(lambda: _gone(child), timeout=15, message="the orphaned dashboard to stop")
    finally:
        router.kill()
        if child is not None and not _gone(child):
            child.kill()


def test_herd_dashboard_runs_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = Proc([herd_bin(), "dashboard", "--router-url", f"http://127.0.0.1:{free_port()}",
                 "--port", str(port), "--host", "127.0.0.1"], tmp_path / "dashboard.log")
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=60)
        assert f"http://127.0.0.1:{port}" in proc.output()
        proc.signal(signal.SIGTERM)
        proc.process.wait(15)
    finally:
        proc.stop()
