"""Built-in filters: a node must be servable, have the model, be able to hold it (now, beside
its busy models, while another node has it loaded), not have failed with it lately, serve
the request's path (its Ollama version), and be the node an `X-Herd-Node` header pins the
request to, if any."""

from __future__ import annotations

import time

from shared.estimates import load_seconds, wait_seconds
from shared.fit import fits
from shared.hookspecs import hookimpl
from shared.models import NodeState
from shared.routing import NodeFilter, RouteRequest, ScoringContext, node_serves

__all__ = ["PIN_HEADER", "FitsInMemory", "HasModel", "ModelHealthy", "PinnedNode",
           "RoomToLoad", "Servable", "ServesPath", "WaitForLoaded", "herd_register_filters"]

PIN_HEADER = "x-herd-node"  # RouteRequest.headers has lower-case names


class Servable:
    """Online, its Ollama answering, not draining."""

    name = "servable"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        return node.servable


class ServesPath:
    """The node's Ollama serves the request's path: new enough by the table of first
    versions (shared/endpoints.py; an unknown version may), and it has not answered 404
    for the path itself lately (an Ollama built without it)."""

    name = "serves_path"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        return node_serves(node, request.path, context.inputs)


class HasModel:
    """The model is on the node's disk or in its memory: Herd never substitutes another."""

    name = "has_model"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        return node.has_model(request.model)


class FitsInMemory:
    """A load that needs more than all of a node's memory (with VRAM and swap) can never
    happen there: the weights, the KV cache for the request's num_ctx, what a node said
    when it refused the model (shared/fit.py; what is unknown passes)."""

    name = "fits_in_memory"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        model = request.model
        return fits(node, model, request.num_ctx_for(node.node_id),
                    context.snapshot.refusals(model), context.slots(node))


class ModelHealthy:
    """A model that failed `node_failures_degraded` times in a row on a node (its runner
    crashed, ran out of memory, hung) is not sent there for `model_failure_cooldown`
    seconds; then one request tries it again. The node's other models are not affected:
    only failures that blame the node itself degrade it."""

    name = "model_healthy"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        failures = node.model_failures.get(request.model) if node.model_failures else None
        if failures is None:
            return True
        settings = context.settings
        return (failures.count < settings.node_failures_degraded
                or time.time() - failures.last >= settings.model_failure_cooldown)


# A loaded model takes more than its weights: its KV cache (num_ctx x slots) and buffers.
LOADED_OVERHEAD = 1.2


class RoomToLoad:
    """A node without the model loaded is a candidate only if the model fits beside the
    models busy there (in flight on it, or waited for in the fleet-wide queue) and pinned
    copies (the others may be evicted), and they leave a place under its max_loaded_models,
    unless no other node has it loaded.

    Ollama never evicts a busy model: a request sent where the model does not fit waits
    until the others fall idle, which on a busy node may be never, and then evicts a
    model that is in demand (thrashing). Waiting for a slot where it is loaded is quicker
    (FINDINGS, "What wins on a heterogeneous fleet")."""

    name = "room_to_load"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        model = request.model
        if node.loaded(model) is not None:
            return True
        size = node.model_size_gb(model)
        if not size or not node.memory_total_gb:
            return True
        inputs = context.inputs
        pinned = context.settings.pinned_models
        # in use here, waited for fleet-wide (it will be in use here again soon), or pinned
        # (the leader keeps it; evicting it would only make it load again)
        busy = [m.size_gb for m in node.models_loaded
                if inputs.in_flight(node.node_id, m.name) > 0 or inputs.queued.get(m.name)
                or m.name in pinned]
        most = node.max_loaded_models
        if size * LOADED_OVERHEAD <= node.memory_total_gb - sum(busy) and (
                most <= 0 or len(busy) < most):
            return True
        warm = context.snapshot.warm_and_cold(model)[0]
        excluded = context.excluded
        return not any(n.node_id not in excluded for n in warm) if excluded else not warm


class WaitForLoaded:
    """The wait rule: a node that would cold-load the model is a candidate only while the
    expected wait for a slot on the loaded copies is at least as long as that load.

    Expected wait: the requests already waiting for the model plus this one, over the
    loaded copies' slots, times a request's running time there (the decaying latency
    average); a free slot on a loaded copy means no wait (the request takes it: loaded
    copies rank first). The load: measured on that node, else the fleet's seconds per GB
    times the model's size (shared/estimates.py, the same estimates the leader's queue
    copies use). No load or running time measured yet, no loaded copy, a node named by
    X-Herd-Node, a retry, or `wait_for_loaded` off: the node stays a candidate."""

    name = "wait_for_loaded"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        model = request.model
        if (not context.settings.wait_for_loaded or node.loaded(model) is not None
                or context.excluded or request.headers.get(PIN_HEADER)):
            return True
        warm = context.snapshot.warm_and_cold(model)[0]
        if not warm:
            return True
        inputs = context.inputs
        slots = busy = 0
        latencies = []
        for copy in warm:
            slots += context.slots(copy)
            busy += inputs.in_flight(copy.node_id, model)
            stats = inputs.latency.get((copy.node_id, model))
            latencies.append(stats.latency_ms if stats is not None else 0.0)
        if busy < slots:
            return True
        wait = wait_seconds(latencies, slots, inputs.queued.get(model, 0) + 1)
        # a guessed load time must not hold requests back: only a measured one (there, or
        # the fleet's seconds per GB)
        if wait is None or not inputs.load_ms:
            return True
        return wait >= load_seconds(node, model, inputs.load_ms, context.snapshot)


class PinnedNode:
    """`X-Herd-Node: <node_id>` keeps only that node, e.g. to load a model on a chosen node
    from the dashboard. The other filters still apply: a pinned node that cannot serve the
    request leaves no candidate (503), never a silent move to another node."""

    name = "pinned_node"

    def allows(self, node: NodeState, request: RouteRequest, context: ScoringContext) -> bool:
        pinned = request.headers.get(PIN_HEADER, "").strip()
        return not pinned or node.node_id == pinned


@hookimpl
def herd_register_filters() -> list[NodeFilter]:
    return [PinnedNode(), Servable(), ServesPath(), HasModel(), ModelHealthy(), FitsInMemory(),
            RoomToLoad(), WaitForLoaded()]
