"""Pulls: where a model goes, and auto_pull (a model no node has is pulled onto the roomiest
node while the client waits)."""

from __future__ import annotations

import asyncio
import logging

from services.router.fleet.core import Core
from services.router.fleet.events import emit
from services.router.fleet.registry import Registry
from services.router.nodes import Nodes
from shared.errors import ModelNotFound, NoNodeAvailable, UpstreamError
from shared.models import NodeState

__all__ = ["Pulls"]

log = logging.getLogger("herd.autopull")

# What a node's registry says when the name does not exist (a typo): the client's 404.
_UNKNOWN_NAME = ("not found", "does not exist", "file does not exist")


class Pulls:
    """Where a pull goes, and this replica's auto_pulls: one per model at a time, shared by
    the requests that wait for it."""

    def __init__(self, core: Core, fleet: Registry, nodes: Nodes) -> None:
        self._core, self._fleet, self._nodes = core, fleet, nodes
        self.running: dict[str, asyncio.Task[None]] = {}

    def choose_node(self, model: str) -> NodeState:
        """The servable node with the most free memory, preferring nodes without the model."""
        servable = [n for n in self._fleet.snapshot().nodes.values() if n.servable]
        if not servable:
            raise NoNodeAvailable("no online node to pull onto")
        return max(servable, key=lambda n: (
            not n.has_model(model), n.memory_available_gb, n.disk_available_gb, n.node_id,
        ))

    async def for_request(self, model: str) -> None:
        """Return once some node has `model` in the registry, pulling it if need be.

        The client waits up to `queue_timeout`, as it would for a slot. Requests for the same
        model on this replica share one pull. The pull goes on if a waiting client leaves or
        the wait times out (then NoNodeAvailable: retry later), so a large model is not
        downloaded over and over.
        """
        pulls = self.running
        task = pulls.get(model)
        if task is None:
            task = asyncio.create_task(self._pull(model), name=f"herd-auto-pull:{model}")
            pulls[model] = task
            task.add_done_callback(lambda done: _forget(pulls, model, done))
        try:
            await asyncio.wait_for(asyncio.shield(task), self._core.settings.queue_timeout)
        except TimeoutError:
            raise NoNodeAvailable(
                f"{model} is still being pulled onto a node (auto_pull); try again later",
                retry_after=30) from None

    async def _pull(self, model: str) -> None:
        core = self._core
        node = self.choose_node(model)
        log.info("auto_pull: pulling %s onto %s", model, node.node_id,
                 extra={"model": model, "node_id": node.node_id})
        await emit(core.redis, core.keys, "auto_pull", node_id=node.node_id, model=model,
                   stage="started")
        try:
            size_gb = await self._nodes.pull_and_wait(node, model)
        except UpstreamError as exc:
            await emit(core.redis, core.keys, "auto_pull", node_id=node.node_id, model=model,
                       stage="failed", error=exc.message)
            if any(words in exc.message.lower() for words in _UNKNOWN_NAME):
                raise ModelNotFound(model) from exc
            raise
        # the agent reports the model with its next heartbeat; route to it now
        await self._fleet.note_model(node.node_id, model, size_gb)
        await emit(core.redis, core.keys, "auto_pull", node_id=node.node_id, model=model,
                   stage="done", size_gb=round(size_gb, 3))


def _forget(pulls: dict[str, asyncio.Task[None]], model: str, done: asyncio.Task[None]) -> None:
    if pulls.get(model) is done:
        del pulls[model]
    if not done.cancelled() and done.exception() is not None:
        log.warning("auto_pull failed", extra={"model": model, "error": str(done.exception())})
