"""The routes a simulated Ollama serves: those its --ollama-version has, plus /sim/*.

Which version first serves a path comes from shared/endpoints.py, the table the router
uses to pick nodes; a path the version lacks is not registered at all, so it gets the
router's own answer, as from Ollama's: `404 page not found` in plain text.
"""

from __future__ import annotations

from aiohttp import web

from services.sim import (
    anthropic_api,
    audio_api,
    control,
    listing,
    manage,
    ollama_api,
    openai_api,
    responses_api,
)
from services.sim.config import SimConfig
from shared.endpoints import OllamaVersion, endpoint_for, parse_version

__all__ = ["METHOD_NOT_ALLOWED_SINCE", "served_routes"]

# Before this version Ollama's router answered a known path with the wrong method 404.
METHOD_NOT_ALLOWED_SINCE = OllamaVersion(0, 7, 0)

_API = (listing.ROUTES + ollama_api.ROUTES + manage.ROUTES + openai_api.ROUTES
        + responses_api.ROUTES + anthropic_api.ROUTES + audio_api.ROUTES + audio_api.SPEECH_ROUTES)


def _table_path(path: str) -> str:
    """A route's path as a request path the table knows ("/api/blobs/{digest}" -> ".../x")."""
    return path.split("{", 1)[0] + "x" if "{" in path else path


def served_routes(config: SimConfig) -> list[web.RouteDef]:
    version = parse_version(config.version)
    routes: list[web.RouteDef] = []
    for route in _API:
        endpoint = endpoint_for(_table_path(route.path))
        if endpoint is None or endpoint.served_by(version):
            routes.append(route)
    return routes + control.ROUTES
