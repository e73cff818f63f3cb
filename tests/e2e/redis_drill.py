"""The Redis drills' fleet: a simulator, its agent, router processes on a Redis the test
controls, and a bounded load that records every answer."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Proc, free_port, herd_bin, wait_until
from tests.simproc import SimProc, start_sim

MODEL = "llama3.2:3b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
# Replicas notice a dead Redis within this; drills keep it short so they stay short.
REDIS_TIMEOUT = 1.0
ROUTER_ENV = {
    "FLEET_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
    "FLEET_HEARTBEAT_INTERVAL": "0.5",
    "FLEET_HEARTBEAT_TIMEOUT": "10",
    "FLEET_HEARTBEAT_OFFLINE": "20",
    "FLEET_LEASE_SECONDS": "3",  # leases a failover left behind are reaped within the drill
}


@dataclass
class Answer:
    started: float
    seconds: float
    status: int  # 0: no HTTP answer at all (a timeout or a dropped connection)
    retry_after: str | None
    body: Any
    request_id: str = ""  # X-Herd-Request-Id: the trace it should have
    url: str = ""  # the router asked


@dataclass
class Load:
    """Threads sending small chats in a loop, bounded in count and time, to `urls` in turn."""

    urls: list[str]
    workers: int = 3
    max_seconds: float = 45.0
    max_requests: int = 4000
    headers: dict[str, str] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=15.0, headers=self.headers) as client:
            turn = index
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.answers) >= self.max_requests:
                        return
                url = self.urls[turn % len(self.urls)]
                turn += 1
                started = time.monotonic()
                try:
                    response = client.post(f"{url}/api/chat", json=CHAT)
                    try:
                        body = response.json()
                    except json.JSONDecodeError:
                        body = response.text
                    answer = Answer(started, time.monotonic() - started, response.status_code,
                                    response.headers.get("retry-after"), body,
                                    response.headers.get("x-herd-request-id", ""), url)
                except httpx.HTTPError as exc:
                    answer = Answer(started, time.monotonic() - started, 0, None, repr(exc),
                                    url=url)
                with self._lock:
                    self.answers.append(answer)
                if answer.status != 200:
                    time.sleep(0.05)  # a failing fleet answers at once: don't spin

    def __enter__(self) -> Load:
        for index in range(self.workers):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.started >= moment]

    def served_after(self, moment: float, url: str = "") -> bool:
        """True once a request started after `moment` was served (by `url`, if given)."""
        return any(a.status == 200 and (not url or a.url == url) for a in self.since(moment))

    def statuses(self) -> dict[int, int]:
        with self._lock:
            counts: dict[int, int] = {}
            for answer in self.answers:
                counts[answer.status] = counts.get(answer.status, 0) + 1
            return counts

    def failures(self) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.status != 200]


def check_failures_are_503s(load: Load) -> None:
    """Every failed answer is a 503 in Ollama's shape with Retry-After: no 500, 404 or hang."""
    bad = [a for a in load.failures() if a.status != 503]
    assert not bad, f"answers other than 200/503: {bad[:5]} (all: {load.statuses()})"
    for answer in load.failures():
        assert answer.retry_after and int(answer.retry_after) > 0, answer
        assert isinstance(answer.body, dict) and isinstance(answer.body.get("error"), str), answer


class DrillFleet:
    """One simulated node with its agent, and router replicas; everything stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = f"herddrill:{uuid.uuid4().hex[:8]}:"
        self.procs: list[Proc] = []
        self.routers: list[str] = []
        self.sim: SimProc | None = None

    def start_sim(self, models: tuple[str, ...] = (MODEL,)) -> SimProc:
        self.sim = start_sim(self.tmp, "drill-node", models=list(models), tokens_per_s=0,
                             response_tokens="4-4", num_parallel=8, keep_alive="-1")
        self.procs.append(self.sim)
        return self.sim

    def router(self, redis_url: str, *, env: dict[str, str] | None = None,
               name: str = "") -> str:
        port = free_port()
        name = name or f"router{len(self.routers) + 1}"
        redis = ["--redis-url", redis_url] if redis_url else []
        proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), *redis,
                     "--no-mdns", "--no-dashboard", "--data-dir", str(self.tmp / name)],
                    self.tmp / f"{name}.log",
                    env={**ROUTER_ENV, "FLEET_REDIS_PREFIX": self.prefix, **(env or {})})
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/healthz", timeout=30)
        self.routers.append(url)
        return url

    def agent(self, *router_urls: str, env: dict[str, str] | None = None) -> Proc:
        assert self.sim is not None
        proc = Proc([herd_bin("herd-node"), "--router-url", ",".join(router_urls),
                     "--ollama-host", self.sim.url, "--node-id", "drill-node", "--no-mdns",
                     "--data-dir", str(self.tmp / "agent")],
                    self.tmp / "agent.log", env={**ROUTER_ENV, **(env or {})})
        self.procs.append(proc)
        return proc

    def wait_serving(self, url: str, timeout: float = 20.0) -> None:
        """Until a chat through `url` is served (the node registered and reachable)."""

        def served() -> bool:
            return httpx.post(f"{url}/api/chat", json=CHAT, timeout=5).status_code == 200

        wait_until(served, timeout=timeout, interval=0.1, message=f"a chat served by {url}")

    def in_flight(self, url: str) -> int:
        queues = httpx.get(f"{url}/fleet/status", timeout=5).json()["queues"]
        return sum(int(q.get("in_flight", 0)) + int(q.get("pending", 0))
                   for q in queues.values())

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextlib.contextmanager
def drill_fleet(tmp: Path) -> Iterator[DrillFleet]:
    fleet = DrillFleet(tmp)
    try:
        yield fleet
    finally:
        fleet.stop()
