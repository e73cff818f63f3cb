"""`herd` as a real process: embedded Redis, an external Redis, a bad URL, kill -9, `herd check`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers import Proc, free_port, herd_bin, wait_until


def _start(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        [herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns", "--no-dashboard",
         "--data-dir", str(tmp_path / "data"), *extra],
        tmp_path / "herd.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/healthz")
    return proc, url


def _embedded_redis_pid(data: Path) -> int:
    return int((data / "redis" / "redis.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_serves_version_on_embedded_redis_and_stops_it(tmp_path: Path) -> None:
    proc, url = _start(tmp_path)
    try:
        assert httpx.get(url + "/api/version").json()["version"]
        assert httpx.get(url + "/").text == "Ollama is running"
        assert httpx.head(url + "/").status_code == 200
        redis_pid = _embedded_redis_pid(tmp_path / "data")
        assert _alive(redis_pid)
        check = subprocess.run([herd_bin(), "check", "--url", url], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    finally:
        assert proc.stop() == 0
    wait_until(lambda: not _alive(redis_pid), timeout=5, message="embedded Redis to stop")
    log_lines = (tmp_path / "data" / "logs" / "herd.jsonl").read_text().splitlines()
    messages = [json.loads(line)["msg"] for line in log_lines]
    assert "embedded Redis started" in messages
    assert "router stopping" in messages


def test_kill_9_leaves_no_redis_behind(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path)
    redis_pid = _embedded_redis_pid(tmp_path / "data")
    proc.signal(signal.SIGKILL)
    proc.process.wait(5)
    wait_until(lambda: not _alive(redis_pid), timeout=5, message="orphaned Redis to exit")
    proc.stop()


def test_external_redis_url(tmp_path: Path, redis_url: str, prefix: str) -> None:
    # Under the test's own prefix: a shared Redis's real herd: keys are never touched.
    proc, url = _start(tmp_path, "--redis-url", redis_url, env={"FLEET_REDIS_PREFIX": prefix})
    try:
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        assert not (tmp_path / "data" / "redis").exists()
    finally:
        proc.stop()


def test_unreachable_redis_url_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = subprocess.run(
        [herd_bin(), "--port", str(free_port()), "--no-mdns", "--no-dashboard",
         "--data-dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in lines[0]
    assert "Traceback" not in result.stderr


def test_check_fails_when_nothing_answers() -> None:
    result = subprocess.run(
        [herd_bin(), "check", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "herd check" in result.stderr


def test_help_is_clear() -> None:
    for args in ([herd_bin(), "--help"], [herd_bin("herd-node"), "--help"]):
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0
        assert "--redis-url" in out.stdout or "--router-url" in out.stdout


def test_sigterm_ends_live_event_streams_instead_of_waiting_for_them(tmp_path: Path) -> None:
    """An open /dashboard/events stream must not hold the graceful shutdown (10 s)."""
    proc, url = _start(tmp_path)
    with httpx.stream("GET", url + "/dashboard/events", timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: fleet"
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        for _ in lines:  # drains until the router ends the stream
            pass
    assert proc.process.wait(15) == 0
    assert time.monotonic() - started < 8.0, "shutdown waited for the stream to time out"
    proc.stop()
