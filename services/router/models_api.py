"""Model management: what each node has, and pulling or deleting models on a chosen node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

from services.router.context import RouterContext
from services.router.health_api import fleet_snapshot
from services.router.settings_api import require_admin
from shared.errors import BadRequest, NodeNotFound, NoNodeAvailable, UpstreamError
from shared.models import NodeState, normalize_model

__all__ = ["ROUTES", "choose_pull_node", "model_management", "pull_and_wait"]

PULL_CONNECT_TIMEOUT = 10.0
DELETE_TIMEOUT = 30.0


def model_management(ctx: RouterContext) -> dict[str, Any]:
    """Per node: installed and loaded models with sizes, and free memory."""
    snapshot = fleet_snapshot(ctx)
    nodes = []
    where: dict[str, list[str]] = {}
    for node in sorted(snapshot.nodes.values(), key=lambda n: n.node_id):
        loaded = {m.name: m for m in node.models_loaded}
        installed = sorted(set(node.models_available) | set(loaded))
        for model in installed:
            where.setdefault(model, []).append(node.node_id)
        nodes.append({
            "node_id": node.node_id,
            "status": str(node.status),
            "servable": node.servable,
            "memory_total_gb": node.memory_total_gb,
            "memory_available_gb": node.memory_available_gb,
            "disk_available_gb": getattr(node, "disk_available_gb", 0.0),
            "installed": [
                {"name": m, "size_gb": node.model_size_gb(m), "loaded": m in loaded}
                for m in installed
            ],
            "loaded": [
                {"name": m.name, "size_gb": m.size_gb, "context_length": m.context_length,
                 "requests_active": m.requests_active, "expires_at": m.expires_at}
                for m in node.models_loaded
            ],
        })
    return {"nodes": nodes, "models": where}


def choose_pull_node(ctx: RouterContext, model: str) -> NodeState:
    """The servable node with the most free memory, preferring nodes without the model."""
    servable = [n for n in fleet_snapshot(ctx).nodes.values() if n.servable]
    if not servable:
        raise NoNodeAvailable("no online node to pull onto")
    return max(servable, key=lambda n: (
        not n.has_model(model), n.memory_available_gb,
        getattr(n, "disk_available_gb", 0.0), n.node_id,
    ))


def _node(ctx: RouterContext, node_id: Any) -> NodeState:
    if not isinstance(node_id, str) or not node_id:
        raise BadRequest("node_id must be a non-empty string")
    node = fleet_snapshot(ctx).nodes.get(node_id)
    if node is None:
        raise NodeNotFound(f"node {node_id!r} not found")
    if not node.ollama_url:
        raise NoNodeAvailable(f"node {node_id!r} has no known Ollama address")
    return node


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model must be a non-empty string")
    return normalize_model(model)


async def _open_pull(
    node: NodeState, model: str, forward: dict[str, Any],
) -> tuple[aiohttp.ClientSession, aiohttp.ClientResponse]:
    """POST /api/pull to the node; the caller closes the session."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
        total=None, sock_connect=PULL_CONNECT_TIMEOUT, connect=PULL_CONNECT_TIMEOUT))
    try:
        return session, await session.post(f"{node.ollama_url}/api/pull", json=forward)
    except (aiohttp.ClientError, TimeoutError) as exc:
        await session.close()
        raise UpstreamError(f"cannot reach {node.node_id} to pull {model}: {exc}") from exc


async def pull_and_wait(node: NodeState, model: str) -> float:
    """Pull `model` onto `node` and return once the node has it, with its size in GB.

    Raises UpstreamError if the node cannot be reached, refuses, or reports an error in
    its progress (an unknown name, a full disk). The caller bounds the wait.
    """
    session, upstream = await _open_pull(node, model, {"model": model, "stream": True})
    total = 0
    try:
        if upstream.status >= 400:
            text = (await upstream.read())[:300].decode(errors="replace")
            raise UpstreamError(f"{node.node_id} refused to pull {model}: {text}")
        async for line in upstream.content:
            if not line.strip():
                continue
            try:
                progress = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if not isinstance(progress, dict):
                continue
            if progress.get("error"):
                raise UpstreamError(f"pull of {model} on {node.node_id}: {progress['error']}")
            if isinstance(progress.get("total"), int):
                total = max(total, progress["total"])
            if progress.get("status") == "success":
                return total / 1e9
        raise UpstreamError(f"pull of {model} on {node.node_id} ended without success")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"pull of {model} on {node.node_id} failed: {exc}") from exc
    finally:
        upstream.release()
        await session.close()


async def _pull(node: NodeState, model: str, body: dict[str, Any]) -> Response[Any]:
    """Start the pull on the node and pass its progress through as it arrives."""
    forward = {k: v for k, v in body.items() if k not in {"node_id", "name"}}
    forward["model"] = model
    stream = forward.get("stream", True) is not False
    session, upstream = await _open_pull(node, model, forward)
    headers = {"X-Fleet-Node": node.node_id}
    if upstream.status >= 400 or not stream:
        try:
            content = await upstream.read()
        finally:
            upstream.release()
            await session.close()
        return Response(content, status_code=upstream.status, headers=headers,
                        media_type=upstream.headers.get("Content-Type", MediaType.JSON))

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield msgspec.json.encode({"error": f"pull on {node.node_id} failed: {exc}"}) + b"\n"
        finally:
            upstream.release()
            with contextlib.suppress(Exception):
                await session.close()

    return Stream(relay(), headers=headers, media_type="application/x-ndjson")


async def _delete(node: NodeState, model: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=DELETE_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.delete(
            f"{node.ollama_url}/api/delete", json={"model": model},
        ) as upstream:
            text = await upstream.text()
            status = upstream.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"cannot reach {node.node_id} to delete {model}: {exc}") from exc
    if status == 404:
        raise NodeNotFound(f"model {model!r} not found on {node.node_id}")
    if status >= 400:
        raise UpstreamError(f"{node.node_id} refused to delete {model}: {status} {text[:200]}")
    return {"status": "deleted", "model": model, "node_id": node.node_id}


@get("/dashboard/api/model-management")
async def management(state: State) -> dict[str, Any]:
    return model_management(state.herd)


async def _pull_request(request: Request[Any, Any, Any], ctx: RouterContext) -> Response[Any]:
    require_admin(ctx, request)
    body = await _json_body(request)
    model = _model(body)
    node = _node(ctx, body["node_id"]) if body.get("node_id") is not None \
        else choose_pull_node(ctx, model)
    return await _pull(node, model, body)


@post("/dashboard/api/pull", status_code=200)
async def dashboard_pull(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return await _pull_request(request, state.herd)


@post("/api/pull", status_code=200)
async def ollama_pull(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Ollama's pull; Herd puts the model on the roomiest node unless `node_id` names one."""
    return await _pull_request(request, state.herd)


@post("/dashboard/api/delete", status_code=200)
async def dashboard_delete(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    body = await _json_body(request)
    return await _delete(_node(ctx, body.get("node_id")), _model(body))


ROUTES = [management, dashboard_pull, ollama_pull, dashboard_delete]
