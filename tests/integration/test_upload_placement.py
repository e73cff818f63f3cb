"""Where blobs and creates go, as shared state: a stateful property test on a real Redis.

Two or three replicas (each a RouterContext with its own registry snapshot) share one
Redis prefix and three nodes. Hypothesis uploads blobs (HEAD and POST place them the same
way), creates models naming some of them, changes the nodes' free disk and draining
(which would lure a fresh choice elsewhere), and lets clients' upload records lapse, in
orders nobody wrote down, through any replica. The model is what Redis should hold: the
node each blob went to, and each client's upload node.

Invariants, checked at every step:
- Redis holds exactly the model's records (the blob and upload keys), whichever replica
  wrote them.
- A blob goes to the node it already went to while that node is servable; else to its
  client's upload node while that one is servable; else to the servable node with the
  most free disk. So the blobs of one model, uploaded one after another by one client,
  land on one node even as free disk changes.
- A create naming blobs that went to one node runs on that node, from every replica; one
  naming blobs on two nodes is refused (409), never sent to a node that lacks some.
- Every replica gives the same answer to the same create.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
import redis as sync_redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from services.router.context import RouterContext
from services.router.fleet.manage import place_blob, place_create, remember_blob
from shared.errors import Conflict
from shared.keys import Keys
from shared.redisconn import connect
from shared.settings import Settings

T = TypeVar("T")
EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "herd-heartbeat-example.json").read_text())
NODES = ("n0", "n1", "n2")
CLIENTS = ("10.0.0.1", "10.0.0.2")
BLOBS = tuple(f"sha256:{c * 64}" for c in "abcde")


def beat(node_id: str, disk_gb: float, draining: bool) -> dict[str, Any]:
    payload = copy.deepcopy(EXAMPLE)
    payload.update(node_id=node_id, ollama_host=f"http://{node_id}.lan:11434",
                   draining=draining)
    payload["disk"]["available_gb"] = disk_gb
    return payload


class PlacementMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"herdtest:{uuid.uuid4().hex[:10]}:"
        self.keys = Keys(self.prefix)
        self.redis: Redis = connect(self.redis_url, key_prefix=self.prefix)
        self.replicas: list[RouterContext] = []
        self.disk = {n: 50.0 for n in NODES}
        self.draining = {n: False for n in NODES}
        self.blob_node: dict[str, str] = {}  # the model: where each blob went
        self.upload_node: dict[str, str] = {}  # each client's upload node

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize(replicas=st.integers(min_value=2, max_value=3),
                disks=st.lists(st.integers(1, 5), min_size=3, max_size=3))
    def start(self, replicas: int, disks: list[int]) -> None:
        config = Settings.load(environ={}, redis_url=self.redis_url, redis_prefix=self.prefix,
                               mdns_enabled=False, dashboard_enabled=False)
        self.replicas = [RouterContext.create(config, self.redis) for _ in range(replicas)]
        for node_id, disk in zip(NODES, disks, strict=True):
            self.disk[node_id] = disk * 10.0
            self.run(self.replicas[0].fleet.ingest_heartbeat(
                beat(node_id, self.disk[node_id], False), "127.0.0.1"))
        self._refresh()

    def teardown(self) -> None:
        client = sync_redis.Redis.from_url(self.redis_url)
        try:
            batch = list(client.scan_iter(match=self.keys.match(), count=500))
            if batch:
                client.delete(*batch)
        finally:
            client.close()
        self.run(self.redis.aclose())
        self.loop.close()

    def _refresh(self) -> None:
        for ctx in self.replicas:
            self.run(ctx.fleet.refresh(sweep=False))

    def servable(self, node_id: str | None) -> bool:
        return node_id is not None and not self.draining[node_id]

    def roomiest(self) -> str | None:
        servable = [n for n in NODES if self.servable(n)]
        if not servable:
            return None
        # the registry breaks ties by free memory (equal here), then by node id
        return max(servable, key=lambda n: (self.disk[n], n))

    # --- actions, through any replica ----------------------------------------------------

    @precondition(lambda self: self.replicas)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), blob=st.sampled_from(BLOBS))
    def upload(self, data: st.DataObject, client: str, blob: str) -> None:
        ctx = data.draw(st.sampled_from(self.replicas))
        went, session = self.blob_node.get(blob), self.upload_node.get(client)
        if self.servable(went):
            expected = went
        elif self.servable(session):
            expected = session
        else:
            expected = self.roomiest()
        if expected is None:
            with pytest.raises(Exception, match="no online node"):
                self.run(place_blob(ctx, client, blob, None))
            return
        node = self.run(place_blob(ctx, client, blob, None))
        assert node.node_id == expected
        self.run(remember_blob(ctx, client, blob, node))
        self.blob_node[blob] = self.upload_node[client] = node.node_id

    @precondition(lambda self: self.replicas)
    @rule(client=st.sampled_from(CLIENTS),
          blobs=st.lists(st.sampled_from(BLOBS), min_size=1, max_size=3, unique=True))
    def create(self, client: str, blobs: list[str]) -> None:
        body = {"model": "made", "files": {f"f{i}.gguf": b for i, b in enumerate(blobs)}}
        holders = {self.blob_node[b] for b in blobs if b in self.blob_node}
        answers = []
        for ctx in self.replicas:  # every replica answers the same
            if len(holders) > 1:
                with pytest.raises(Conflict):
                    self.run(place_create(ctx, client, body, None))
                continue
            if not holders and not self.servable(self.upload_node.get(client)) \
                    and self.roomiest() is None:
                with pytest.raises(Exception, match="no online node"):
                    self.run(place_create(ctx, client, body, None))
                continue
            answers.append(self.run(place_create(ctx, client, body, None)).node_id)
        if holders and len(holders) == 1:
            assert answers == [holders.pop()] * len(self.replicas)
        elif answers:
            session = self.upload_node.get(client)
            expected = session if self.servable(session) else self.roomiest()
            assert answers == [expected] * len(self.replicas)

    @precondition(lambda self: self.replicas)
    @rule(node_id=st.sampled_from(NODES), disk=st.integers(1, 9), draining=st.booleans())
    def heartbeat(self, node_id: str, disk: int, draining: bool) -> None:
        self.disk[node_id], self.draining[node_id] = disk * 10.0, draining
        self.run(self.replicas[0].fleet.ingest_heartbeat(
            beat(node_id, disk * 10.0, draining), "127.0.0.1"))
        self._refresh()

    @precondition(lambda self: self.replicas)
    @rule(client=st.sampled_from(CLIENTS))
    def upload_record_lapses(self, client: str) -> None:
        """What the record's TTL does after a quarter of an hour without uploads."""
        self.run(self.redis.delete(self.keys.upload_node(client)))
        self.upload_node.pop(client, None)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def redis_holds_the_models_records(self) -> None:
        if not self.replicas:
            return
        blobs = self.run(self.redis.mget([self.keys.blob_node(b) for b in BLOBS]))
        assert dict(zip(BLOBS, blobs, strict=True)) == {
            b: self.blob_node.get(b) for b in BLOBS}
        sessions = self.run(self.redis.mget([self.keys.upload_node(c) for c in CLIENTS]))
        assert dict(zip(CLIENTS, sessions, strict=True)) == {
            c: self.upload_node.get(c) for c in CLIENTS}


def test_blobs_and_creates_land_together_across_replicas(redis_url: str) -> None:
    PlacementMachine.redis_url = redis_url
    run_state_machine_as_test(PlacementMachine, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
