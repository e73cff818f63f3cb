"""The fleet's catalogue in Ollama's and OpenAI's shapes: /api/tags, /api/ps, /v1/models,
and /api/show forwarded to a node that has the model."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from services.router.api.errors import OPENAI_ERROR_RESPONSES, error_responses
from services.router.context import RouterContext
from services.router.fleet.catalog import fan_out, merge_ps, merge_tags
from shared.bodies import decode_object
from shared.errors import BadRequest, ModelNotFound, NoNodeAvailable, UpstreamError
from shared.models import normalize_model, valid_model_name
from shared.schemas import OpenAIModel, OpenAIModelList, PsList, TagsList

__all__ = ["ROUTES"]

_decode = msgspec.json.Decoder().decode


@get("/api/tags", tags=["ollama"], summary="Every model on the fleet's nodes, by name")
async def tags(state: State) -> TagsList:
    return TagsList(models=merge_tags(await fan_out(state.herd, "/api/tags")))


@get("/api/ps", tags=["ollama"], summary="Every loaded copy of a model, with its node")
async def ps(state: State) -> PsList:
    return PsList(models=merge_ps(await fan_out(state.herd, "/api/ps")))


@get("/v1/models", tags=["openai"], summary="The fleet's models in OpenAI's shape")
async def openai_models(state: State) -> OpenAIModelList:
    snapshot = state.herd.fleet.snapshot()
    created = int(time.time())
    return OpenAIModelList(data=[OpenAIModel(id=name, created=created)
                                 for name in sorted(snapshot.models())])


@get("/v1/models/{model:path}", tags=["openai"], responses=OPENAI_ERROR_RESPONSES,
     summary="One model in OpenAI's shape")
async def openai_model(request: Request[Any, Any, Any], state: State) -> OpenAIModel:
    name = str(request.path_params["model"]).lstrip("/")
    if normalize_model(name) not in state.herd.fleet.snapshot().models():
        raise ModelNotFound(name)
    return OpenAIModel(id=name, created=int(time.time()))


@post("/api/show", status_code=200, tags=["ollama"],
      responses={**error_responses(400, 404, 502, 503),
                 200: ResponseSpec(dict[str, Any], description="The node's answer, as sent.",
                                   generate_examples=False)},
      summary="A model's details, from a node that has it")
async def show(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    ctx: RouterContext = state.herd
    raw = await request.body()
    body = decode_object(raw)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("model is required")
    if not valid_model_name(name.strip()):
        raise BadRequest("model is not a valid model name")
    model = normalize_model(name)
    snapshot = ctx.fleet.snapshot()
    if model not in snapshot.models():
        raise ModelNotFound(model)
    nodes = sorted(snapshot.servable_with(model), key=lambda n: n.loaded(model) is None)
    if not nodes:
        raise NoNodeAvailable(f"no node with {model} is online")
    last = ""
    for node in nodes[:3]:
        try:
            status, data = await ctx.nodes.post_whole(
                node, "/api/show", raw, ctx.settings.connect_timeout + 10)
        except UpstreamError as exc:
            last = exc.message
            continue
        if status >= 500:
            last = f"{node.node_id} answered {status}"
            continue
        return Response(data, status_code=status, media_type=MediaType.JSON,
                        headers={"X-Fleet-Node": node.node_id})
    raise UpstreamError(f"no node answered /api/show for {model}: {last}")


ROUTES = [tags, ps, openai_models, openai_model, show]
