"""Model management across the fleet: delete and copy on every node that has the model;
create, its blob uploads and push on one node, chosen the same way by every replica.

Delete and copy ask every node that is not offline, not only those the registry lists:
the registry learns of a node's models from its heartbeats, and a model made on the node
a moment ago (or by hand) is not listed yet. A node's 404 means it does not have the
model. A node that fails is a failure of the whole answer when the registry lists the
model there or when it answered with an error; one that cannot be reached and is not
listed with the model is only named (X-Herd-Unreached-Nodes), as are offline nodes that
list it. The fleet's view follows at once: each node that changed is noted in the registry
(`Registry.note_model`) before the client gets its answer, and its next heartbeat confirms.

A create and the blobs it names must land on one node: the `ollama` clients upload each
blob (HEAD, then POST /api/blobs/{digest}) and only then call create with the digests.
Where a blob went is kept in Redis (`blob:<digest>`, a day), and so is the node a client's
uploads go to (`upload:<client>`, renewed by each upload), so that every replica sends
the next blob and the create to the same node. The order of choice, for a blob:
X-Herd-Node, the node the blob already went to, the client's upload node, the servable
node with the most free disk; for a create: X-Herd-Node, the node its blobs went to, the
client's upload node (when it names blobs), a node that has its `from` model, the most
free disk.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from services.router.fleet.registry import Registry
from services.router.nodes import Nodes
from shared.errors import (
    BadRequest,
    Conflict,
    HerdError,
    NodeNotFound,
    NoNodeAvailable,
    NotFound,
    UpstreamError,
)
from shared.keys import Keys
from shared.models import NodeState, NodeStatus, normalize_model
from shared.redisconn import REDIS_UNAVAILABLE

__all__ = [
    "BLOB_TTL",
    "UPLOAD_TTL",
    "ManageParts",
    "Outcome",
    "blob_digest",
    "copy_everywhere",
    "delete_everywhere",
    "note_created",
    "place_blob",
    "place_create",
    "place_push",
    "remember_blob",
]

# A create may follow a slow multi-GB upload by hours; the blob stays on the node anyway.
BLOB_TTL = 24 * 3600
# The blobs of one model come one after another; a client's uploads a quarter of an hour
# apart are another model, free to go to the roomiest node again.
UPLOAD_TTL = 15 * 60

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")

log = logging.getLogger("herd.models")


class ManageParts(Protocol):
    """What model management uses of a replica's context."""

    redis: Redis
    keys: Keys
    fleet: Registry
    nodes: Nodes


async def _note(ctx: ManageParts, node_id: str, model: str, size_gb: float | None) -> None:
    """Note a change the nodes already made. With Redis away the node's next heartbeat
    tells the registry instead: the client still learns that the change was made."""
    try:
        await ctx.fleet.note_model(node_id, model, size_gb)
    except REDIS_UNAVAILABLE as exc:
        log.warning("%s changed on %s; the registry learns it from the next heartbeat",
                    model, node_id, extra={"node_id": node_id, "model": model,
                                           "error": str(exc)})


def blob_digest(text: str) -> str:
    """A blob's digest as Ollama takes it in a path (`sha256:<hex>` or `sha256-<hex>`),
    kept as given; BadRequest (Ollama's words) for anything else."""
    if _DIGEST.match(text) is None:
        raise BadRequest("invalid digest format")
    return text


def _digest_key(digest: str) -> str:
    """One spelling per blob for its Redis record: both name the same file at Ollama."""
    return "sha256:" + digest[7:].lower()


# --- delete and copy on every node ----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What every node said to one delete or copy."""

    done: tuple[str, ...] = ()  # nodes where it was done
    absent: tuple[str, ...] = ()  # nodes that answered 404: they do not have the model
    failed: tuple[tuple[str, int, str], ...] = ()  # (node, status or 0, message)
    # nodes the registry lists with the model that are offline: not asked
    offline: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)

    def error(self, what: str, model: str, missing: str) -> HerdError | None:
        """The client's error for `what` ("delete m:latest"), or None when every node
        reached did it.

        Any node that failed makes the answer an error naming each node and what it said
        (502, or 400 when a node refused the request itself), also when others did it:
        the client must not read success while a copy of the model is left behind. No
        node having it is `missing`, a 404 in Ollama's words; only offline nodes having
        it, a 503.
        """
        if self.failed:
            parts = [what]
            if self.done:
                parts.append(f"done on {', '.join(self.done)}")
            parts.append("failed on " + "; ".join(
                f"{node}: {message}" for node, _, message in self.failed))
            message = "; ".join(parts)
            refused = all(status == 400 for _, status, _ in self.failed) and not self.done
            error: HerdError = BadRequest(message) if refused else UpstreamError(message)
        elif not self.done and self.offline:
            error = NoNodeAvailable(
                f"{model} is only on nodes that are offline: {', '.join(self.offline)}",
                retry_after=30)
        elif not self.done:
            error = NotFound(missing)
        else:
            return None
        error.headers.update(self.headers)
        return error


def _reachable(ctx: ManageParts) -> list[NodeState]:
    """Nodes worth asking: known, with an address, not offline (a draining or degraded
    node still answers)."""
    return sorted((n for n in ctx.fleet.snapshot().nodes.values()
                   if n.ollama_url and n.status is not NodeStatus.OFFLINE),
                  key=lambda n: n.node_id)


async def _everywhere(ctx: ManageParts, method: bytes, path: str, payload: bytes,
                      model: str) -> Outcome:
    nodes = _reachable(ctx)

    async def ask(node: NodeState) -> tuple[int, str]:
        try:
            return await ctx.nodes.manage(node, method, path, payload)
        except UpstreamError as exc:
            return 0, exc.message

    answers = list(zip(nodes, await asyncio.gather(*(ask(node) for node in nodes)),
                       strict=True))
    done = tuple(n.node_id for n, (status, _) in answers if 200 <= status < 300)
    absent = tuple(n.node_id for n, (status, _) in answers if status == 404)
    # A node that did not answer and is not listed with the model most likely lacks it
    # (a node that registered and went away): named, not counted as a failure.
    unreached = [n.node_id for n, (status, _) in answers
                 if status == 0 and not n.has_model(model)]
    failed = tuple((n.node_id, status, message or f"answered {status}")
                   for n, (status, message) in answers
                   if (status == 0 and n.has_model(model)) or (status >= 300 and status != 404))
    asked = {n.node_id for n in nodes}
    offline = tuple(sorted(n.node_id for n in ctx.fleet.snapshot().nodes.values()
                           if n.node_id not in asked and n.has_model(model)))
    headers = {"X-Herd-Nodes": ",".join(done)}
    if failed:
        headers["X-Herd-Failed-Nodes"] = ",".join(node for node, _, _ in failed)
    if offline or unreached:
        headers["X-Herd-Unreached-Nodes"] = ",".join(sorted([*offline, *unreached]))
    return Outcome(done, absent, failed, offline, headers)


async def delete_everywhere(ctx: ManageParts, model: str, payload: bytes) -> Outcome:
    """Delete `model` on every node that has it (the client's body, as sent); the nodes
    that did it no longer list it."""
    outcome = await _everywhere(ctx, b"DELETE", "/api/delete", payload, model)
    for node_id in outcome.done:
        await _note(ctx, node_id, model, None)
    return outcome


async def copy_everywhere(ctx: ManageParts, source: str, destination: str,
                          payload: bytes) -> Outcome:
    """Copy `source` to `destination` on every node that has it (a copy is a second name
    for the same files: the size is the source's)."""
    outcome = await _everywhere(ctx, b"POST", "/api/copy", payload, source)
    nodes = ctx.fleet.snapshot().nodes
    for node_id in outcome.done:
        node = nodes.get(node_id)
        size = node.model_size_gb(source) if node is not None else 0.0
        await _note(ctx, node_id, destination, size)
    return outcome


# --- one node for create, blobs and push ----------------------------------------------


def named_node(ctx: ManageParts, node_id: str) -> NodeState:
    """The node an X-Herd-Node header names: known, with an address, not offline."""
    node = ctx.fleet.snapshot().nodes.get(node_id)
    if node is None:
        raise NodeNotFound(f"node {node_id[:100]!r} not found (X-Herd-Node)")
    if not node.ollama_url or node.status is NodeStatus.OFFLINE:
        raise NoNodeAvailable(f"node {node_id!r} (X-Herd-Node) is {node.status}")
    return node


def _servable(ctx: ManageParts, node_id: str | None) -> NodeState | None:
    node = ctx.fleet.snapshot().nodes.get(node_id) if node_id else None
    return node if node is not None and node.servable else None


def _roomiest(nodes: list[NodeState], what: str) -> NodeState:
    if not nodes:
        raise NoNodeAvailable(f"no online node to {what}")
    return max(nodes, key=lambda n: (n.disk_available_gb, n.memory_available_gb, n.node_id))


async def _upload_node(ctx: ManageParts, client: str) -> NodeState | None:
    return _servable(ctx, await ctx.redis.get(ctx.keys.upload_node(client)))


async def _keep_upload_node(ctx: ManageParts, client: str, node: NodeState) -> None:
    await ctx.redis.set(ctx.keys.upload_node(client), node.node_id, ex=UPLOAD_TTL)


async def place_blob(ctx: ManageParts, client: str, digest: str,
                     named: str | None) -> NodeState:
    """The node a blob's HEAD or upload goes to; it becomes the client's upload node."""
    if named:
        node = named_node(ctx, named)
    else:
        went = _servable(ctx, await ctx.redis.get(ctx.keys.blob_node(_digest_key(digest))))
        node = went or await _upload_node(ctx, client) or _roomiest(
            [n for n in ctx.fleet.snapshot().nodes.values() if n.servable], "upload to")
    await _keep_upload_node(ctx, client, node)
    return node


async def remember_blob(ctx: ManageParts, client: str, digest: str,
                        node: NodeState) -> None:
    """The node has the blob (it said so, or took the upload)."""
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.set(ctx.keys.blob_node(_digest_key(digest)), node.node_id, ex=BLOB_TTL)
        pipe.set(ctx.keys.upload_node(client), node.node_id, ex=UPLOAD_TTL)
        await pipe.execute()


def _named_blobs(body: dict[str, Any]) -> list[str]:
    digests: list[str] = []
    for kind in ("files", "adapters"):
        files = body.get(kind)
        if isinstance(files, dict):
            digests.extend(d for d in files.values() if isinstance(d, str) and _DIGEST.match(d))
    return digests


async def place_create(ctx: ManageParts, client: str, body: dict[str, Any],
                       named: str | None) -> NodeState:
    """The node a create runs on (the module docstring gives the order)."""
    if named:
        return named_node(ctx, named)
    digests = _named_blobs(body)
    if digests:
        went = await ctx.redis.mget([ctx.keys.blob_node(_digest_key(d)) for d in digests])
        holders = sorted({node_id for node_id in went if node_id})
        if len(holders) > 1:
            raise Conflict(
                "the files of this model were uploaded to different nodes "
                f"({', '.join(holders)}): upload them again with X-Herd-Node naming one")
        if holders:
            node = ctx.fleet.snapshot().nodes.get(holders[0])
            if node is None or not node.ollama_url or node.status is NodeStatus.OFFLINE:
                raise NoNodeAvailable(
                    f"the files of this model were uploaded to {holders[0]}, which is not "
                    "online now")
            return node
        session = await _upload_node(ctx, client)
        if session is not None:
            return session
    servable = [n for n in ctx.fleet.snapshot().nodes.values() if n.servable]
    base = body.get("from")
    if isinstance(base, str) and base.strip():
        with_base = [n for n in servable if n.has_model(normalize_model(base))]
        if with_base:
            return _roomiest(with_base, "create on")
    return _roomiest(servable, "create on")


async def place_push(ctx: ManageParts, client: str, model: str,
                     named: str | None) -> NodeState:
    """A node that has `model`: the named one, else the client's upload node if it has it
    (where it was just created), else the least busy."""
    if named:
        return named_node(ctx, named)
    session = await _upload_node(ctx, client)
    if session is not None and session.has_model(model):
        return session
    nodes = ctx.fleet.snapshot().servable_with(model)
    if not nodes:
        if model in ctx.fleet.snapshot().models():
            raise NoNodeAvailable(f"no node with {model} is online")
        raise NotFound(f"model '{model}' not found")
    return min(nodes, key=lambda n: (n.requests_active, n.node_id))


async def note_created(ctx: ManageParts, node: NodeState, model: str) -> None:
    """A create succeeded on `node`: list the model there at once, with the size the node
    gives it (0 until its next heartbeat if the node does not say)."""
    tags = await ctx.nodes.get_json(node, "/api/tags")
    size = 0
    for entry in (tags or {}).get("models") or ():
        if (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and normalize_model(entry["name"]) == model
                and isinstance(entry.get("size"), int)):
            size = entry["size"]
    await _note(ctx, node.node_id, model, size / 1e9)
