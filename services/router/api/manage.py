"""Ollama's model management through the fleet: delete, copy, create, blobs and push.

What the `ollama` CLI and Open WebUI's admin pages send, admin-protected like pull. Delete
and copy reach every node that has the model and answer as Ollama does (200, empty body),
X-Herd-Nodes naming the nodes; create, its blobs and push run on one node, named in
X-Fleet-Node (fleet/manage.py says which). Bodies reach the nodes as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import MediaType, Request, Response, delete, head, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from services.router.api.auth import require_admin
from services.router.api.errors import error_responses
from services.router.api.progress import relay_progress
from services.router.context import RouterContext
from services.router.fleet.manage import (
    Outcome,
    blob_digest,
    copy_everywhere,
    delete_everywhere,
    note_created,
    place_blob,
    place_create,
    place_push,
    remember_blob,
)
from shared.bodies import decode_object, model_field
from shared.schemas import PullProgress

__all__ = ["ROUTES"]


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


def _named(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("x-herd-node", "").strip() or None


def _done(outcome: Outcome, what: str, model: str, missing: str) -> Response[bytes]:
    """The answer to a delete or copy: the error naming each node that failed, else 200."""
    error = outcome.error(what, model, missing)
    if error is not None:
        raise error
    # Ollama answers a delete or copy with 200 and no body; the nodes go in headers, which
    # every client ignores unless it looks.
    return Response(b"", status_code=200, headers=outcome.headers, media_type=MediaType.TEXT)


_FANOUT_RESPONSES = {
    **error_responses(400, 401, 403, 404, 502, 503),
    200: ResponseSpec(None, description="Done on every node reached that had the model; "
                      "X-Herd-Nodes names them, X-Herd-Unreached-Nodes the nodes that may "
                      "hold a copy but were not reached (offline, or not answering)."),
}
_PROGRESS_RESPONSES = {
    **error_responses(400, 401, 403, 404, 409, 502, 503),
    200: ResponseSpec(PullProgress, media_type="application/x-ndjson", generate_examples=False,
                      description="The node's progress, one JSON object per line (one object "
                      "with \"stream\": false); X-Fleet-Node names the node."),
}


@delete("/api/delete", status_code=200, tags=["ollama"], responses=_FANOUT_RESPONSES,
         summary="Delete a model on every node that has it (admin)")
async def ollama_delete(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    model = model_field(decode_object(raw), "model", "name")
    outcome = await delete_everywhere(ctx, model, raw)
    return _done(outcome, f"delete {model}", model, f"model '{model}' not found")


@post("/api/copy", status_code=200, tags=["ollama"], responses=_FANOUT_RESPONSES,
      summary="Copy a model on every node that has it (admin)")
async def ollama_copy(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw)
    source = model_field(body, "source")
    destination = model_field(body, "destination")
    outcome = await copy_everywhere(ctx, source, destination, raw)
    return _done(outcome, f"copy {source} to {destination}", source,
                 f'model "{source}" not found')


@post("/api/create", status_code=200, tags=["ollama"], responses=_PROGRESS_RESPONSES,
      summary="Create a model on one node: X-Herd-Node, else where its blobs went (admin)")
async def ollama_create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw)
    model = model_field(body, "model", "name")
    node = await place_create(ctx, _client(request), body, _named(request))
    upstream = await ctx.nodes.progress(node, "/api/create", raw, f"create {model}")

    async def created() -> None:
        await note_created(ctx, node, model)

    return await relay_progress(upstream, node.node_id, "create",
                                stream=body.get("stream", True) is not False, done=created)


@post("/api/push", status_code=200, tags=["ollama"], responses=_PROGRESS_RESPONSES,
      summary="Push a model from a node that has it (admin)")
async def ollama_push(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    raw = await request.body()
    body = decode_object(raw)
    model = model_field(body, "model", "name")
    node = await place_push(ctx, _client(request), model, _named(request))
    upstream = await ctx.nodes.progress(node, "/api/push", raw, f"push {model}")
    return await relay_progress(upstream, node.node_id, "push",
                                stream=body.get("stream", True) is not False)


@head("/api/blobs/{digest:str}", tags=["ollama"],
      responses={**error_responses(400, 401, 403, 502, 503),
                 404: ResponseSpec(None, description="The node uploads go to lacks it.")},
      summary="Whether the node this client's uploads go to has the blob (admin)")
async def blob_head(request: Request[Any, Any, Any], state: State) -> Response[None]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    client, digest = _client(request), blob_digest(str(request.path_params["digest"]))
    node = await place_blob(ctx, client, digest, _named(request))
    answer = await ctx.nodes.head_blob(node, digest)
    if answer.status == 200:
        await remember_blob(ctx, client, digest, node)
    return Response(None, status_code=answer.status, headers={"X-Fleet-Node": node.node_id})


async def _chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


# No body limit: a blob is a model's weights (many GB), streamed to the node as it
# arrives, never held whole; only an admin may send one.
@post("/api/blobs/{digest:str}", status_code=201, tags=["ollama"], request_max_body_size=None,
      responses={**error_responses(400, 401, 403, 502, 503),
                 200: ResponseSpec(None, description="The node had the blob already."),
                 201: ResponseSpec(None, description="The node stored the upload.")},
      summary="Upload a blob to the node this client's uploads go to (admin)")
async def blob_upload(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    client, digest = _client(request), blob_digest(str(request.path_params["digest"]))
    node = await place_blob(ctx, client, digest, _named(request))
    status, answer = await ctx.nodes.upload_blob(
        node, digest, _chunks(request), request.content_length,
        ctx.settings.connect_timeout)
    if status in (200, 201):
        await remember_blob(ctx, client, digest, node)
    media = MediaType.JSON if answer.lstrip().startswith(b"{") else MediaType.TEXT
    return Response(answer, status_code=status, headers={"X-Fleet-Node": node.node_id},
                    media_type=media)


ROUTES = [ollama_delete, ollama_copy, ollama_create, ollama_push, blob_head, blob_upload]
