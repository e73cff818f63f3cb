"""Redis drills with real processes on loopback: killed, frozen, failed over, TLS-only, and
`herd` restarted on its embedded Redis (docs/operations.md says what each must show)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from shared.keys import Keys
from tests.e2e.redis_drill import (
    CHAT,
    MODEL,
    DrillFleet,
    Load,
    check_failures_are_503s,
    drill_fleet,
)
from tests.e2e.redis_endpoints import (
    CALLS,
    EXTRA_MODEL,
    Result,
    call_all,
    operations,
    shape_problem,
)
from tests.helpers import Proc, free_port, herd_bin, wait_until
from tests.redisproc import (
    RedisProc,
    make_tls_files,
    require_system_redis,
    sentinel_group,
    sentinel_url,
)
from tests.simproc import start_sim

pytestmark = pytest.mark.timeout(90)  # each drill takes well under a minute

ADMIN = {"Authorization": "Bearer drill-admin"}


def _fleet_on(fleet: DrillFleet, redis_url: str) -> str:
    fleet.start_sim()
    router = fleet.router(redis_url)
    fleet.agent(router)
    fleet.wait_serving(router)
    return router


def _recovers(load: Load, since: float, timeout: float) -> None:
    wait_until(lambda: load.served_after(since), timeout=timeout, interval=0.1,
               message="requests served again")


def _counters_return_to_zero(fleet: DrillFleet, router: str) -> None:
    """Once the load has stopped: nothing in flight or waiting (a lease the outage left
    behind is returned by the reaper after FLEET_LEASE_SECONDS)."""
    wait_until(lambda: fleet.in_flight(router) == 0 or None, timeout=15, interval=0.2,
               message="no slot or waiter left over")


def test_redis_killed_under_load_then_restarted_empty(tmp_path: Path) -> None:
    redis = RedisProc(tmp_path, "redis").start()
    try:
        with drill_fleet(tmp_path) as fleet:
            router = _fleet_on(fleet, redis.url)
            with Load([router]) as load:
                wait_until(lambda: load.served_after(0), timeout=10, message="load served")
                redis.kill()
                killed = time.monotonic()
                wait_until(lambda: any(a.status == 503 for a in load.since(killed)),
                           timeout=10, message="a 503 while Redis is away")
                health = httpx.get(f"{router}/healthz", timeout=5)
                assert health.status_code == 503
                time.sleep(max(0.0, 5.0 - (time.monotonic() - killed)))  # the 5 s outage
                assert not load.served_after(killed + 0.5)  # nothing served without Redis
                redis.start()  # empty: it kept nothing
                back = time.monotonic()
                _recovers(load, back, timeout=15)
            check_failures_are_503s(load)
            _counters_return_to_zero(fleet, router)
            assert any(a.status == 503 for a in load.since(killed))
            assert httpx.get(f"{router}/healthz", timeout=5).status_code == 200
            # The node re-registered by its agent's heartbeat; nothing was left in flight.
            status = httpx.get(f"{router}/fleet/status", timeout=5).json()
            assert status["fleet"]["nodes_online"] == 1
    finally:
        redis.stop()


def test_redis_frozen_then_resumed(tmp_path: Path) -> None:
    redis = RedisProc(tmp_path, "redis").start()
    try:
        with drill_fleet(tmp_path) as fleet:
            router = _fleet_on(fleet, redis.url)
            with Load([router]) as load:
                wait_until(lambda: load.served_after(0), timeout=10, message="load served")
                redis.freeze()
                frozen = time.monotonic()
                wait_until(lambda: sum(a.status == 503 for a in load.since(frozen)) >= 3,
                           timeout=15, message="503s while Redis is frozen")
                check = Proc([herd_bin(), "check", "--url", router, "--timeout", "5"],
                             tmp_path / "check.log")
                assert check.process.wait(20) == 1
                redis.thaw()
                thawed = time.monotonic()
                _recovers(load, thawed, timeout=15)
            check_failures_are_503s(load)
            _counters_return_to_zero(fleet, router)
            # Nothing waited on the frozen Redis for long: the load's own 15 s timeout
            # was never reached (a hang shows up as status 0).
            assert all(a.status != 0 for a in load.answers)
    finally:
        redis.stop()


FROZEN_TIMEOUT = 0.5  # FLEET_REDIS_TIMEOUT in the frozen-Redis drill: short, to keep it short
BOUND = FROZEN_TIMEOUT + 1.0  # every endpoint answers within this while Redis is frozen


def _report(phase: str, results: list[Result]) -> str:
    return f"{phase}:\n" + "\n".join(
        f"  {r.seconds:6.2f} s  {r.status}  {r.call.method} {r.call.url_path}" for r in results)


class _EventStream:
    """/dashboard/events read in a thread: the name of each message, and when it ended."""

    def __init__(self, url: str) -> None:
        self._names: list[str] = []
        self.ended = 0.0
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(5.0, read=15.0)) as response:
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        self._names.append(line.removeprefix("event:").strip())
        finally:
            self.ended = time.monotonic()

    def names(self) -> list[str]:
        return list(self._names)


def test_every_endpoint_answers_while_redis_is_frozen(tmp_path: Path) -> None:
    """SIGSTOP: every operation of the OpenAPI document answers within FLEET_REDIS_TIMEOUT
    + 1 s, 503 in its shape where it needs the shared state; SIGCONT: all is as before,
    with no restart; and a SIGTERM while Redis is frozen still stops `herd` promptly."""
    redis = RedisProc(tmp_path, "redis").start()
    try:
        with drill_fleet(tmp_path) as fleet:
            fleet.start_sim(models=(MODEL, EXTRA_MODEL))
            router = fleet.router(redis.url, env={"FLEET_REDIS_TIMEOUT": str(FROZEN_TIMEOUT),
                                                  "FLEET_ADMIN_TOKEN": "drill-admin"})
            herd = fleet.procs[-1]
            fleet.agent(router)
            fleet.wait_serving(router)
            document = httpx.get(f"{router}/schema/openapi.json", timeout=5).json()
            assert operations(document) == {call.operation for call in CALLS}, \
                "tests/e2e/redis_endpoints.py: CALLS must hold every operation of the API"

            stream = _EventStream(f"{router}/dashboard/events")
            wait_until(lambda: "fleet" in stream.names(), timeout=10, message="a live snapshot")

            redis.freeze()
            frozen_at = time.monotonic()
            # Those that need Redis all at once, so each waits out its own reply timeout
            # (none is spared by another's); then the rest in order (a pull, then a delete).
            frozen = call_all(router, ADMIN, [c for c in CALLS if c.frozen == 503],
                              timeout=BOUND + 5, parallel=True)
            frozen += call_all(router, ADMIN, [c for c in CALLS if c.frozen != 503],
                               timeout=BOUND + 5, parallel=False)
            print(_report("frozen", frozen))
            # A stream that was running ends with an `error` message, not in silence.
            stream.thread.join(timeout=BOUND + 3)
            assert not stream.thread.is_alive() and stream.names()[-1:] == ["error"], \
                stream.names()
            print(f"the running event stream ended {stream.ended - frozen_at:.2f} s after "
                  "the freeze, with an error message")
            for result in frozen:
                what = f"{result.call.method} {result.call.url_path}"
                assert result.status == result.call.frozen, (what, result.status, result.body)
                assert result.seconds <= BOUND, (what, result.seconds)
                if result.status == 503:
                    assert not shape_problem(result), (what, shape_problem(result))

            redis.thaw()
            # Within a moment of the thaw (a late reply makes the next calls fail at once
            # for 0.5 s), and with no restart.
            thawed_at, thawed_wall = time.monotonic(), time.time()
            fleet.wait_serving(router, timeout=10)
            print(f"serving again {time.monotonic() - thawed_at:.2f} s after the thaw")

            def beat_since_thaw() -> bool:  # the agent, refused meanwhile, posts again
                nodes = httpx.get(f"{router}/fleet/status", timeout=5).json()["nodes"]
                return any(n["node_id"] == "drill-node" and n["last_seen"] > thawed_wall
                           for n in nodes)

            wait_until(beat_since_thaw, timeout=5, message="the agent's heartbeat taken again")
            thawed = call_all(router, ADMIN, CALLS, timeout=30, parallel=False)
            print(_report("thawed", thawed))
            for result in thawed:
                what = f"{result.call.method} {result.call.url_path}"
                assert result.status == result.call.thawed, (what, result.status, result.body)

            # The background watchers came back too: a setting another replica stores (here,
            # straight into Redis) applies on this one.
            direct = redis.client()
            keys = Keys(fleet.prefix)
            direct.hset(keys.settings(), "max_retries", "4")
            direct.publish(keys.settings_channel(), "max_retries")
            direct.close()
            wait_until(lambda: _setting(httpx.get(f"{router}/dashboard/api/settings",
                                                  timeout=5).json(), "max_retries") == 4,
                       timeout=5, message="a setting stored elsewhere, applied here")

            redis.freeze()
            wait_until(lambda: httpx.get(f"{router}/healthz", timeout=5).status_code == 503,
                       timeout=5, message="healthz 503 once Redis is frozen again")
            stopping = time.monotonic()
            herd.signal(signal.SIGTERM)
            assert herd.process.wait(30) == 0
            stopped = time.monotonic() - stopping
            print(f"SIGTERM to herd while Redis is frozen: exited in {stopped:.2f} s")
            assert stopped < 5
            redis.thaw()
    finally:
        redis.stop()


def test_sentinel_failover_under_load(tmp_path: Path) -> None:
    with sentinel_group(tmp_path) as (master, _replica, sentinel), \
            drill_fleet(tmp_path) as fleet:
        router = _fleet_on(fleet, sentinel_url(sentinel))
        with Load([router]) as load:
            wait_until(lambda: load.served_after(0), timeout=10, message="load served")
            master.kill()
            killed = time.monotonic()
            # Served again within 15 s of the kill: Sentinel's 1 s down-after, its
            # election, and Herd's re-discovery of the master.
            _recovers(load, killed + 0.5, timeout=15)
        check_failures_are_503s(load)
        _counters_return_to_zero(fleet, router)


def test_tls_only_redis_with_a_password_two_replicas_and_an_agent(tmp_path: Path) -> None:
    binary = require_system_redis()
    tls = make_tls_files(tmp_path)
    redis = RedisProc(tmp_path, "tls", binary=binary, password="drill-pw", tls=tls).start()
    try:
        with drill_fleet(tmp_path) as fleet:
            fleet.start_sim()
            env = {"FLEET_ADMIN_TOKEN": "drill-admin"}
            first = fleet.router(redis.url, env=env)
            second = fleet.router(redis.url, env=env)
            fleet.agent(first, second)
            fleet.wait_serving(first)
            fleet.wait_serving(second)  # registered through either, known to both
            for url in (first, second):
                answer = httpx.post(f"{url}/api/chat", json=CHAT, timeout=10)
                assert answer.status_code == 200
                assert answer.headers["x-fleet-node"] == "drill-node"
                nodes = httpx.get(f"{url}/fleet/status", timeout=5).json()["nodes"]
                assert [n["node_id"] for n in nodes] == ["drill-node"]
            changed = httpx.post(f"{first}/dashboard/api/settings", json={"max_retries": 4},
                                 headers=ADMIN, timeout=5)
            assert changed.status_code == 200, changed.text

            def seen_by_second() -> bool:
                got = httpx.get(f"{second}/dashboard/api/settings", timeout=5).json()
                return bool(_setting(got, "max_retries") == 4)

            wait_until(seen_by_second, timeout=10, message="the setting on the other replica")
    finally:
        redis.stop()


def _setting(answer: dict[str, list[dict[str, object]]], name: str) -> object:
    return next(s["value"] for s in answer["settings"] if s["name"] == name)


def test_herd_restarted_on_its_embedded_redis_keeps_its_state(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, "drill-node", models=[MODEL], tokens_per_s=0,
                    response_tokens="4-4", keep_alive="-1")
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"FLEET_ADMIN_TOKEN": "drill-admin", "FLEET_HEARTBEAT_INTERVAL": "0.5"}

    def start() -> Proc:
        proc = Proc([herd_bin(), "--host", "127.0.0.1", "--port", str(port), "--no-mdns",
                     "--no-dashboard", "--data-dir", str(data)], tmp_path / "herd.log", env=env)
        proc.wait_http(f"{url}/healthz", timeout=30)
        return proc

    agent = Proc([herd_bin("herd-node"), "--router-url", url, "--ollama-host", sim.url,
                  "--node-id", "drill-node", "--no-mdns", "--data-dir", str(tmp_path / "a")],
                 tmp_path / "agent.log", env=env)
    herd = start()
    try:
        wait_until(lambda: httpx.post(f"{url}/api/chat", json=CHAT, timeout=5).status_code
                   == 200, timeout=20, message="first chat served")
        for _ in range(4):
            assert httpx.post(f"{url}/api/chat", json=CHAT, timeout=10).status_code == 200
        assert httpx.post(f"{url}/dashboard/api/settings", json={"max_retries": 5},
                          headers=ADMIN, timeout=5).status_code == 200

        def usage_requests() -> int:
            usage = httpx.get(f"{url}/dashboard/api/usage", timeout=5).json()
            return _total_requests(usage)

        before = wait_until(lambda: usage_requests() >= 5 and usage_requests(), timeout=10,
                            message="usage counted")
        traces_before = httpx.get(f"{url}/dashboard/api/traces?limit=50", timeout=5).json()
        assert len(_trace_list(traces_before)) >= 5
        assert herd.stop() == 0
        herd = start()
        assert usage_requests() >= before
        assert _setting(httpx.get(f"{url}/dashboard/api/settings", timeout=5).json(),
                        "max_retries") == 5
        traces_after = _trace_list(
            httpx.get(f"{url}/dashboard/api/traces?limit=50", timeout=5).json())
        ids = {t["request_id"] for t in _trace_list(traces_before)}
        assert ids <= {t["request_id"] for t in traces_after}
    finally:
        herd.stop()
        agent.stop()
        sim.stop()


def _total_requests(usage: dict[str, dict[str, int]]) -> int:
    return int(usage["fleet"]["requests"])


def _trace_list(answer: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    return answer["traces"]
