"""The fleet's catalogue in Ollama's and OpenAI's shapes: /api/tags, /api/ps, /v1/models,
and /api/show forwarded to a node that has the model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State

from services.router.context import RouterContext
from services.router.proxy import upstream_of
from services.router.registry import fleet_of
from shared.errors import BadRequest, ModelNotFound, NoNodeAvailable, UpstreamError
from shared.models import NodeState, normalize_model

__all__ = ["ROUTES", "merge_ps", "merge_tags"]

FANOUT_TIMEOUT = 3.0  # a slow node must not hold up the whole catalogue
_decode = msgspec.json.Decoder().decode


async def _fetch(ctx: RouterContext, node: NodeState, path: str) -> dict[str, Any] | None:
    timeout = aiohttp.ClientTimeout(total=FANOUT_TIMEOUT)
    try:
        async with upstream_of(ctx).session.get(node.ollama_url + path, timeout=timeout) as r:
            if r.status != 200:
                return None
            data = _decode(await r.read())
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
        return None
    return data if isinstance(data, dict) else None


async def _fan_out(ctx: RouterContext, path: str) -> list[tuple[NodeState, dict[str, Any] | None]]:
    nodes = [n for n in fleet_of(ctx).snapshot().nodes.values() if n.servable]
    results = await asyncio.gather(*(_fetch(ctx, n, path) for n in nodes))
    return list(zip(nodes, results, strict=True))


def merge_tags(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """The union of the nodes' /api/tags by name; a node that did not answer adds what its
    heartbeat said."""
    models: dict[str, dict[str, Any]] = {}
    for node, answer in answers:
        listed = answer.get("models") if answer else None
        if isinstance(listed, list):
            for entry in listed:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    name = normalize_model(entry["name"])
                    models.setdefault(name, {**entry, "name": name, "model": name})
            continue
        for name in node.models_available:
            models.setdefault(name, {
                "name": name, "model": name,
                "size": int(node.model_sizes_gb.get(name, 0.0) * 1e9),
            })
    return [models[name] for name in sorted(models)]


def merge_ps(answers: list[tuple[NodeState, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """Every loaded copy on every node, each with the node it is on."""
    loaded: list[dict[str, Any]] = []
    for node, answer in answers:
        listed = answer.get("models") if answer else None
        if isinstance(listed, list):
            loaded.extend(
                {**entry, "node_id": node.node_id} for entry in listed if isinstance(entry, dict))
            continue
        loaded.extend({
            "name": m.name, "model": m.name, "size": int(m.size_gb * 1e9),
            "context_length": m.context_length, "expires_at": m.expires_at or None,
            "node_id": node.node_id,
        } for m in node.models_loaded)
    loaded.sort(key=lambda m: (str(m.get("name")), m["node_id"]))
    return loaded


@get("/api/tags")
async def tags(state: State) -> dict[str, Any]:
    return {"models": merge_tags(await _fan_out(state.herd, "/api/tags"))}


@get("/api/ps")
async def ps(state: State) -> dict[str, Any]:
    return {"models": merge_ps(await _fan_out(state.herd, "/api/ps"))}


@get("/v1/models")
async def openai_models(state: State) -> dict[str, Any]:
    snapshot = fleet_of(state.herd).snapshot()
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "library"}
        for name in sorted(snapshot.models())
    ]}


@get("/v1/models/{model:path}")
async def openai_model(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    name = str(request.path_params["model"]).lstrip("/")
    if normalize_model(name) not in fleet_of(state.herd).snapshot().models():
        raise ModelNotFound(name)
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "library"}


@post("/api/show", status_code=200)
async def show(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    ctx: RouterContext = state.herd
    raw = await request.body()
    try:
        body = _decode(raw) if raw.strip() else None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("model is required")
    model = normalize_model(name)
    snapshot = fleet_of(ctx).snapshot()
    if model not in snapshot.models():
        raise ModelNotFound(model)
    nodes = sorted(snapshot.servable_with(model), key=lambda n: n.loaded(model) is None)
    if not nodes:
        raise NoNodeAvailable(f"no node with {model} is online")
    last = ""
    for node in nodes[:3]:
        try:
            async with upstream_of(ctx).session.post(
                node.ollama_url + "/api/show", data=raw,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=ctx.settings.connect_timeout + 10),
            ) as upstream:
                data = await upstream.read()
                if upstream.status >= 500:
                    last = f"{node.node_id} answered {upstream.status}"
                    continue
                return Response(
                    data, status_code=upstream.status, media_type=MediaType.JSON,
                    headers={"X-Fleet-Node": node.node_id},
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{node.node_id}: {type(exc).__name__}"
    raise UpstreamError(f"no node answered /api/show for {model}: {last}")


ROUTES = [tags, ps, openai_models, openai_model, show]
