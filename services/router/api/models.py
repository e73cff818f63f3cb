"""Model management: what each node has, and pulling or deleting models on a chosen node."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.api.progress import relay_progress
from services.router.context import RouterContext
from services.router.fleet.reads import model_management
from shared.bodies import decode_object, model_field
from shared.errors import BadRequest, NodeNotFound, NoNodeAvailable
from shared.models import NodeState
from shared.schemas import DeleteAnswer, ModelManagement, PullProgress

__all__ = ["ROUTES"]


def _node(ctx: RouterContext, node_id: Any) -> NodeState:
    if not isinstance(node_id, str) or not node_id:
        raise BadRequest("node_id must be a non-empty string")
    node = ctx.fleet.snapshot().nodes.get(node_id)
    if node is None:
        raise NodeNotFound(f"node {node_id!r} not found")
    if not node.ollama_url:
        raise NoNodeAvailable(f"node {node_id!r} has no known Ollama address")
    return node


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return decode_object(await request.body())


def _model(body: dict[str, Any]) -> str:
    return model_field(body, "model", "name")


async def _pull(ctx: RouterContext, node: NodeState, model: str,
                body: dict[str, Any]) -> Response[Any]:
    """Start the pull on the node and pass its progress through as it arrives."""
    forward = {k: v for k, v in body.items() if k not in {"node_id", "name", "model"}}
    upstream = await ctx.nodes.pull(node, model, forward)
    return await relay_progress(upstream, node.node_id, "pull",
                                stream=forward.get("stream", True) is not False)


# A pull answers the node's progress as NDJSON (or one JSON object with "stream": false).
PULL_RESPONSES = {
    **error_responses(400, 401, 403, 404, 502, 503),
    200: ResponseSpec(PullProgress, media_type="application/x-ndjson", generate_examples=False,
                      description="The node's progress, one JSON object per line; a failure "
                      "after the start is a last line with `error`."),
}


@get("/dashboard/api/model-management", tags=["models"],
     summary="Per node: installed and loaded models, and free memory")
async def management(state: State) -> ModelManagement:
    return model_management(state.herd)


async def _pull_request(request: Request[Any, Any, Any], ctx: RouterContext) -> Response[Any]:
    require_admin(ctx, request)
    body = await _json_body(request)
    model = _model(body)
    node = _node(ctx, body["node_id"]) if body.get("node_id") is not None \
        else ctx.pulls.choose_node(model)
    return await _pull(ctx, node, model, body)


@post("/dashboard/api/pull", status_code=200, tags=["models"], responses=PULL_RESPONSES,
      summary="Pull a model onto a node (admin)")
async def dashboard_pull(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return await _pull_request(request, state.herd)


@post("/api/pull", status_code=200, tags=["ollama"], responses=PULL_RESPONSES,
      summary="Ollama's pull, onto the roomiest node unless node_id names one (admin)")
async def ollama_pull(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Ollama's pull; Herd puts the model on the roomiest node unless `node_id` names one."""
    return await _pull_request(request, state.herd)


@post("/dashboard/api/delete", status_code=200, tags=["models"],
      responses=error_responses(400, 401, 403, 404, 502, 503),
      summary="Delete a model from a node (admin)")
async def dashboard_delete(request: Request[Any, Any, Any], state: State) -> DeleteAnswer:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    body = await _json_body(request)
    node, model = _node(ctx, body.get("node_id")), _model(body)
    await ctx.nodes.delete(node, model)
    return DeleteAnswer(model=model, node_id=node.node_id)


ROUTES = [management, dashboard_pull, ollama_pull, dashboard_delete]
