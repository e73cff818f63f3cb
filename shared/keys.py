"""The Redis layout: every key and channel Herd uses is built here, under one prefix.

Each key family has one writer (docs/architecture.md, "Shared state"). Node ids and model
names go into keys verbatim; both may contain ':' (``llama3.2:3b``), so a key's parts are
joined with '|' where they could be confused.

On a Redis Cluster the prefix is the hash tag of every key (`{herd}:` for `herd:`): all of a
deployment's keys then live in one slot, so every script, MULTI and pipeline stays on one
node. A single Redis keeps the prefix as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MODEL_FAILED_AT_FIELD", "MODEL_FAILURES_FIELD", "REFUSED_FIELD", "Keys", "hash_tagged",
]

# Per-model fields of a node's registry hash, each followed by the model's name (the Lua
# scripts spell them the same way). Router-observed, so a heartbeat leaves them alone.
MODEL_FAILURES_FIELD = "mfail:"  # failures of the model there since its last success
MODEL_FAILED_AT_FIELD = "mfail_at:"  # Redis time of its last failure there
REFUSED_FIELD = "refused:"  # the node's word that the model did not fit (MemoryRefusal)


def hash_tagged(prefix: str) -> str:
    """`prefix` made a Redis Cluster hash tag: 'herd:' -> '{herd}:'.

    A prefix that already holds a tag ('{...}' with something inside) is kept as it is: only
    the first tag of a key counts, and every key starts with the prefix.
    """
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:  # Redis's rule (cluster spec)
        return prefix
    core = prefix.rstrip(":")
    if not core:
        raise ValueError("the key prefix (FLEET_REDIS_PREFIX) must not be empty on a Redis "
                         "Cluster: it becomes the hash tag of every key")
    return "{" + core + "}" + prefix[len(core):]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "herd:"

    @classmethod
    def for_redis(cls, prefix: str, *, cluster: bool) -> Keys:
        """The keys of one deployment: on a cluster, `prefix` as every key's hash tag."""
        return cls(hash_tagged(prefix) if cluster else prefix)

    # --- node registry (writer: routers, on heartbeat and on proxy errors)
    def nodes(self) -> str:
        """Set of every known node id."""
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        """Hash: the node's last heartbeat payload (`state`), `status`, `last_seen`,
        `draining`, and what the routers observed: `failures` (the node's), and per model
        the fields named above."""
        return f"{self.prefix}node:{node_id}"

    def node_alive(self, node_id: str) -> str:
        """Liveness key with a TTL, refreshed by each heartbeat."""
        return f"{self.prefix}alive:{node_id}"

    # --- slots and the fleet-wide queue (writer: routers, through Lua scripts)
    def slots(self, node_id: str, model: str) -> str:
        """Sorted set: request id -> lease expiry in ms."""
        return f"{self.prefix}slots:{node_id}|{model}"

    def wait(self, model: str) -> str:
        """Sorted set: waiting request id -> its place in the fair order (lowest goes next):
        priority band * 2^44 + the request's virtual finish tag (see docs/queueing.md)."""
        return f"{self.prefix}wait:{model}"

    def wait_lease(self, model: str) -> str:
        """Sorted set: waiting request id -> liveness expiry in ms, refreshed by its replica.

        Used instead of one `waiter:{id}` key per waiter so acquire.lua sees every waiter's
        liveness through a key it is given (Redis Cluster-safe) and a replica refreshes
        all its waiters in one pipeline.
        """
        return f"{self.prefix}wait-lease:{model}"

    def wait_first(self, model: str) -> str:
        """Hash: waiting request id -> its first-choice node (counted in `wait_pending`)."""
        return f"{self.prefix}wait-first:{model}"

    def wait_pending(self, model: str) -> str:
        """Hash: node id -> requests waiting for `model` whose first choice is that node.

        Kept per model rather than in each node's counters so the scripts that drop any
        waiter reach it through a key they are given.
        """
        return f"{self.prefix}wait-pending:{model}"

    def wait_app(self, model: str) -> str:
        """Hash: waiting request id -> its app (see docs/queueing.md "Fair scheduling")."""
        return f"{self.prefix}wait-app:{model}"

    def wait_apps(self, model: str) -> str:
        """Hash: app -> how many of its requests wait for `model` (fields at 0 are dropped)."""
        return f"{self.prefix}wait-apps:{model}"

    def wait_fair(self, model: str) -> str:
        """Hash: app -> virtual finish tag of its newest queued request; field "" holds the
        queue's virtual clock. Deleted whenever the queue empties."""
        return f"{self.prefix}wait-fair:{model}"

    def wait_nodes(self, model: str) -> str:
        """Hash: waiting request id -> JSON of what a script needs to grant it a slot: its
        candidate nodes in preference order, conversation key, replica's grant channel,
        lease and conversation-index settings (shared/lua/_queue.lua)."""
        return f"{self.prefix}wait-nodes:{model}"

    def wait_cap(self, model: str) -> str:
        """Hash: node id -> its slots for `model`, as the newest request that queued for it
        said; a field goes when no waiter lists the node, the hash when the queue empties.
        Lets a release, which does not know the capacity, give the slot on."""
        return f"{self.prefix}wait-cap:{model}"

    def counters(self, node_id: str, model: str) -> str:
        """Hash: pending, in_flight, done, failed for one node:model."""
        return f"{self.prefix}counters:{node_id}|{model}"

    def counters_index(self) -> str:
        """Set of 'node|model' pairs that have counters."""
        return f"{self.prefix}counters-index"

    def queue(self, model: str) -> list[str]:
        """The keys every queue script takes first, as KEYS[1..12] (shared/lua/_queue.lua):
        the model's queue books, then what granting a slot touches (the counters index and
        the conversation index)."""
        return [
            self.wait(model), self.wait_lease(model), self.wait_first(model),
            self.wait_pending(model), self.wait_app(model), self.wait_apps(model),
            self.wait_fair(model), self.wait_nodes(model), self.wait_cap(model),
            self.counters_index(), self.affinity(), self.affinity_node(),
        ]

    def affinity(self) -> str:
        """Sorted set: conversation key -> last use in ms; trimmed to a size and an age."""
        return f"{self.prefix}affinity"

    def affinity_node(self) -> str:
        """Hash: conversation key -> the node that took its last turn (same members)."""
        return f"{self.prefix}affinity-node"

    def latency(self, node_id: str, model: str) -> str:
        """Hash: decaying averages of latency and speed for one node:model."""
        return f"{self.prefix}latency:{node_id}|{model}"

    # --- model uploads (writer: routers, in the blob and create APIs)
    def blob_node(self, digest: str) -> str:
        """String with a TTL: the node an uploaded blob (`sha256:<hex>`) went to, so the
        create that names it runs there."""
        return f"{self.prefix}blob:{digest}"

    def upload_node(self, client: str) -> str:
        """String with a TTL, renewed by each upload: the node a client's uploads go to,
        so the blobs of one model land together."""
        return f"{self.prefix}upload:{client}"

    # --- streams
    def traces(self) -> str:
        """Stream of request traces, capped; consumer group 'recorder'."""
        return f"{self.prefix}traces"

    def events(self) -> str:
        """Stream of fleet events: node status changes, retries, context protection, reaps."""
        return f"{self.prefix}events"

    # --- settings and stats
    def settings(self) -> str:
        """Hash: runtime setting overrides, JSON-encoded values (writer: the settings API;
        its `client_auth` field also the keys API, which closes inference in the same
        script that stores or revokes a key: shared/lua/key_create.lua, key_revoke.lua)."""
        return f"{self.prefix}settings"

    def stats(self, hour: int) -> str:
        """Hash of counters for one hour (epoch hours)."""
        return f"{self.prefix}stats:{hour}"

    def benchmarks(self) -> str:
        """List of stored benchmark runs (JSON)."""
        return f"{self.prefix}benchmarks"

    def benchmarks_active(self) -> str:
        """Hash: run id -> JSON progress of a benchmark run started from the dashboard."""
        return f"{self.prefix}benchmarks-active"

    def benchmark_lock(self) -> str:
        """The running benchmark's id, with a TTL its progress renews: one run at a time."""
        return f"{self.prefix}benchmark-lock"

    # --- client keys (writer: the keys API, through key_create.lua and key_revoke.lua;
    #     last-used times and rate counters: routers)
    def client_keys(self) -> str:
        """Hash: app -> JSON of its key's SHA-256 digest, limits and creation time.

        Never the secret itself: the secret is shown once, when the key is created.
        """
        return f"{self.prefix}client-keys"

    def client_keys_used(self) -> str:
        """Hash: app -> when a request last used its key (epoch seconds), written in batches."""
        return f"{self.prefix}client-keys-used"

    def rate_requests(self, app: str, minute: int) -> str:
        """Counter with a TTL: requests an app's key made in one minute (epoch minutes)."""
        return f"{self.prefix}rate:req|{minute}|{app}"

    def rate_tokens(self, app: str, minute: int) -> str:
        """Counter with a TTL: tokens (prompt + completion) an app's requests that ended in
        one minute used, as the nodes reported them."""
        return f"{self.prefix}rate:tok|{minute}|{app}"

    # --- pins and warm copies (writer: the leader's keeper, services/router/fleet/pins.py)
    def pins(self) -> str:
        """Hash: pinned model -> JSON of its state (satisfied, loading, short and why), as
        the leader last reconciled it; rewritten whole every round."""
        return f"{self.prefix}pins"

    def pins_held(self) -> str:
        """Hash: 'node|model' -> when the leader loaded or refreshed that copy with a
        keep_alive that never runs out; a new leader releases those no pin needs."""
        return f"{self.prefix}pins-held"

    def load_times(self) -> str:
        """Hash: 'node|model' -> a cold load's duration there in ms, measured (the nodes'
        load_duration in the hourly stats); routers read it for the wait rule."""
        return f"{self.prefix}load-times"

    # --- coordination
    def leader(self) -> str:
        """Lease lock held by the replica that runs fleet-wide background jobs."""
        return f"{self.prefix}leader"

    def epoch(self) -> str:
        """A token set once (SET NX) by the first replica to reach this Redis; a replica
        that finds another token, or none, after reconnecting knows Redis came back empty."""
        return f"{self.prefix}epoch"

    # --- pub/sub channels
    def fleet_channel(self) -> str:
        """Announces that the node registry changed; replicas refresh their snapshot."""
        return f"{self.prefix}ch:fleet"

    def grant_channel(self, owner: str) -> str:
        """One replica's slot manager hears here that a script granted one of its waiters a
        slot: JSON [request id, node, remembered node]."""
        return f"{self.prefix}ch:grant:{owner}"

    def settings_channel(self) -> str:
        """Announces that runtime settings changed."""
        return f"{self.prefix}ch:settings"

    def keys_channel(self) -> str:
        """Announces that a client key was created or revoked: replicas reload their view."""
        return f"{self.prefix}ch:client-keys"

    def match(self) -> str:
        """SCAN pattern covering every key under the prefix (for tests and cleanup)."""
        return f"{self.prefix}*"
