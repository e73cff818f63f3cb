"""Pulls: where a model goes, and auto_pull (a model no node has is pulled onto the roomiest
node while the client waits)."""

from __future__ import annotations

import asyncio
import logging

from services.router.context import RouterContext
from services.router.fleet.events import emit
from shared.errors import ModelNotFound, NoNodeAvailable, UpstreamError
from shared.models import NodeState

__all__ = ["choose_pull_node", "pull_for_request"]

log = logging.getLogger("herd.autopull")

# What a node's registry says when the name does not exist (a typo): the client's 404.
_UNKNOWN_NAME = ("not found", "does not exist", "file does not exist")


def choose_pull_node(ctx: RouterContext, model: str) -> NodeState:
    """The servable node with the most free memory, preferring nodes without the model."""
    servable = [n for n in ctx.fleet.snapshot().nodes.values() if n.servable]
    if not servable:
        raise NoNodeAvailable("no online node to pull onto")
    return max(servable, key=lambda n: (
        not n.has_model(model), n.memory_available_gb, n.disk_available_gb, n.node_id,
    ))


async def pull_for_request(ctx: RouterContext, model: str) -> None:
    """Return once some node has `model` in the registry, pulling it if need be.

    The client waits up to `queue_timeout`, as it would for a slot. Requests for the same
    model on this replica share one pull. The pull goes on if a waiting client leaves or
    the wait times out (then NoNodeAvailable: retry later), so a large model is not
    downloaded over and over.
    """
    pulls = ctx.auto_pulls
    task = pulls.get(model)
    if task is None:
        task = asyncio.create_task(_pull(ctx, model), name=f"herd-auto-pull:{model}")
        pulls[model] = task
        task.add_done_callback(lambda done: _forget(pulls, model, done))
    try:
        await asyncio.wait_for(asyncio.shield(task), ctx.settings.queue_timeout)
    except TimeoutError:
        raise NoNodeAvailable(
            f"{model} is still being pulled onto a node (auto_pull); try again later",
            retry_after=30) from None


def _forget(pulls: dict[str, asyncio.Task[None]], model: str, done: asyncio.Task[None]) -> None:
    if pulls.get(model) is done:
        del pulls[model]
    if not done.cancelled() and done.exception() is not None:
        log.warning("auto_pull failed", extra={"model": model, "error": str(done.exception())})


async def _pull(ctx: RouterContext, model: str) -> None:
    node = choose_pull_node(ctx, model)
    log.info("auto_pull: pulling %s onto %s", model, node.node_id,
             extra={"model": model, "node_id": node.node_id})
    await emit(ctx.redis, ctx.keys, "auto_pull", node_id=node.node_id, model=model,
               stage="started")
    try:
        size_gb = await ctx.nodes.pull_and_wait(node, model)
    except UpstreamError as exc:
        await emit(ctx.redis, ctx.keys, "auto_pull", node_id=node.node_id, model=model,
                   stage="failed", error=exc.message)
        if any(words in exc.message.lower() for words in _UNKNOWN_NAME):
            raise ModelNotFound(model) from exc
        raise
    # the agent reports the model with its next heartbeat; route to it now
    await ctx.fleet.note_model(node.node_id, model, size_gb)
    await emit(ctx.redis, ctx.keys, "auto_pull", node_id=node.node_id, model=model,
               stage="done", size_gb=round(size_gb, 3))
