"""The Redis Cluster drill: three primaries with a replica each on loopback, two router
replicas and an agent on it, and the primary that holds Herd's slot killed under load
(docs/operations.md, "Redis Cluster")."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from redis.cluster import ClusterNode, RedisCluster

from shared.keys import Keys, hash_tagged
from shared.models import decode_trace
from tests.e2e.redis_drill import Load, check_failures_are_503s, drill_fleet
from tests.helpers import wait_until
from tests.redisproc import ClusterGroup, redis_cluster, require_cluster_tools

pytestmark = pytest.mark.timeout(150)

ADMIN = {"Authorization": "Bearer drill-admin"}


def _setting(url: str, name: str) -> object:
    answer = httpx.get(f"{url}/dashboard/api/settings", timeout=5).json()
    return next(s["value"] for s in answer["settings"] if s["name"] == name)


def _traced_ids(cluster: ClusterGroup, keys: Keys) -> set[str]:
    """Request ids in the traces stream, read from the cluster itself."""
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port)
                                         for n in cluster.live()], decode_responses=True)
    try:
        ids: set[str] = set()
        for _entry, fields in client.xrange(keys.traces()):
            trace = decode_trace(fields)
            if trace is not None:
                ids.add(trace.request_id)
        return ids
    finally:
        client.close()


def test_the_primary_of_herds_slot_killed_under_load(tmp_path: Path) -> None:
    require_cluster_tools()
    with redis_cluster(tmp_path / "cluster") as cluster, drill_fleet(tmp_path) as fleet:
        url = cluster.url()
        fleet.start_sim()
        env = {"FLEET_ADMIN_TOKEN": "drill-admin"}
        first = fleet.router(url, env=env)
        second = fleet.router(url, env=env)
        fleet.agent(first, second)
        fleet.wait_serving(first)
        fleet.wait_serving(second)
        keys = Keys.for_redis(fleet.prefix, cluster=True)
        primary = cluster.owner(hash_tagged(fleet.prefix))
        assert all(cluster.owner(key) is primary for key in (keys.traces(), keys.settings()))

        # Acknowledged before the kill: a setting through one replica, a key through the other.
        changed = httpx.post(f"{first}/dashboard/api/settings", json={"max_retries": 4},
                             headers=ADMIN, timeout=5)
        assert changed.status_code == 200, changed.text
        created = httpx.post(f"{second}/dashboard/api/keys", json={"app": "drill"},
                             headers=ADMIN, timeout=5)
        assert created.status_code == 201, created.text
        client_key = {"Authorization": f"Bearer {created.json()['key']}"}

        with Load([first, second], workers=4, max_seconds=60, headers=client_key) as load:
            wait_until(lambda: load.served_after(0, first) and load.served_after(0, second),
                       timeout=10, message="load served by both replicas")
            primary.kill()
            killed = time.monotonic()
            for router in (first, second):
                wait_until(lambda r=router: load.served_after(killed + 0.5, r), timeout=15,
                           interval=0.05, message=f"{router} serving again")
            back = min(a.started for a in load.since(killed + 0.5) if a.status == 200)
            # Some more load on the promoted replica before stopping.
            wait_until(lambda: sum(a.status == 200 for a in load.since(back)) >= 40,
                       timeout=15, message="load served after the failover")
        failed = load.failures()
        print(f"cluster drill: served again {back - killed:.2f} s after the kill; "
              f"answers {load.statuses()}; failures in "
              f"{max((a.started for a in failed), default=killed) - killed:.2f} s after it")
        check_failures_are_503s(load)  # no 500: a failover answers 503 with Retry-After
        assert back - killed < 15

        # Nothing acknowledged was lost: the setting, the key, every served request's trace.
        for router in (first, second):
            assert _setting(router, "max_retries") == 4
            listed = httpx.get(f"{router}/dashboard/api/keys", headers=ADMIN, timeout=5)
            assert [k["app"] for k in listed.json()["keys"]] == ["drill"]
        served = {a.request_id for a in load.answers if a.status == 200}
        assert len(served) == sum(a.status == 200 for a in load.answers) and "" not in served
        wait_until(lambda: served <= _traced_ids(cluster, keys), timeout=15, interval=0.2,
                   message="every served request's trace in the stream")
        # Nothing left in flight or waiting (leases the kill left behind are reaped).
        wait_until(lambda: fleet.in_flight(first) == 0 or None, timeout=15, interval=0.2,
                   message="no slot or waiter left over")
