"""The router's own small endpoints: Ollama's root, the version, and a liveness probe.

/api/version answers the Ollama version the fleet serves (fleet/versions.py), since
clients gate features on it; Herd's own version rides along in X-Herd-Version.

Ollama answers HEAD on `/`, `/api/version` and `/api/tags` (200, no body), and health
checks and clients probe with it, so the router does too. HEAD /api/tags does not ask the
nodes: a probe says the router is up, not what the fleet holds.
"""

from __future__ import annotations

from litestar import MediaType, Response, get, head
from litestar.datastructures import ResponseHeader, State
from litestar.openapi.datastructures import ResponseSpec

from services.router.context import RouterContext
from services.router.fleet.versions import fleet_version
from shared.schemas import HealthzError, HealthzOk, VersionAnswer
from shared.version import VERSION

__all__ = ["ROUTES"]


@get("/", media_type=MediaType.TEXT, sync_to_thread=False, tags=["ollama"],
     summary="Ollama's root: the words 'Ollama is running'")
def root() -> str:
    # Clients probe "/" the way they probe Ollama: same words.
    return "Ollama is running"


@head("/", media_type=MediaType.TEXT, sync_to_thread=False)
def root_head() -> Response[None]:
    return Response(None, status_code=200, media_type=MediaType.TEXT)


HERD_VERSION = {"X-Herd-Version": VERSION}


@head(["/api/version", "/api/tags"], media_type=MediaType.JSON, sync_to_thread=False)
def api_head() -> Response[None]:
    return Response(None, status_code=200, media_type=MediaType.JSON, headers=HERD_VERSION)


@get("/api/version", sync_to_thread=False, tags=["ollama"],
     summary="The oldest Ollama version among the servable nodes (Herd's in X-Herd-Version)",
     response_headers=[ResponseHeader(name="X-Herd-Version", description="Herd's own version",
                                      documentation_only=True)])
def version(state: State) -> Response[VersionAnswer]:
    nodes = state.herd.fleet.snapshot().nodes.values()
    return Response(VersionAnswer(version=fleet_version(nodes)), headers=HERD_VERSION)


@get("/healthz", tags=["router"], summary="Liveness: this replica and its Redis",
     responses={503: ResponseSpec(HealthzError, description="Redis does not answer.",
                                  generate_examples=False)})
async def healthz(state: State) -> Response[HealthzOk | HealthzError]:
    ctx: RouterContext = state.herd
    try:
        # Bounded by the client's reply timeout (shared.boundedredis): a frozen Redis fails
        # the check, it does not hang it.
        await ctx.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        reason = str(exc) or f"no answer within {ctx.settings.redis_timeout:g} s"
        return Response(HealthzError(redis=f"unreachable: {reason}"), status_code=503)
    return Response(HealthzOk(version=VERSION, replica=ctx.replica_id))


ROUTES = [root, root_head, api_head, version, healthz]
