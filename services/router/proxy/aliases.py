"""Model aliases: a client's model name (or a glob of names) mapped to a fleet model, before
routing, on every inference API (the `model_aliases` setting).

Agents ask for names no fleet has: Claude Code for `claude-sonnet-4-5-…`, many scripts
for `gpt-4o-mini`. `{"claude-*": "qwen3:32b"}` serves them without changing the client.
An exact name wins over a glob; globs are tried in the order the object lists them. The
node gets the fleet model's name (the only change made to the body); the trace keeps the
client's as `original_model`, and X-Fleet-Requested-Model says it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from services.router.proxy.apis import DIALECTS
from services.router.proxy.request import replace_form_field
from shared.models import normalize_model
from shared.routing import RouteRequest

__all__ = ["apply_alias", "resolve_alias"]

_GLOB = frozenset("*?[")


def resolve_alias(aliases: Mapping[str, str], name: str) -> str | None:
    """The fleet model `name` is an alias of, or None. Names compare by Ollama's rule (no
    tag means `:latest`: an alias of "llama3" also catches "llama3:latest"); globs match
    the name as written or with `:latest`."""
    if not aliases:
        return None
    name = name.strip()
    target = aliases.get(name)
    if target is not None:
        return target
    normalized = normalize_model(name)
    for key, target in aliases.items():
        if not _GLOB.intersection(key) and normalize_model(key) == normalized:
            return target
    for pattern, target in aliases.items():
        if _GLOB.intersection(pattern) and (
                fnmatchcase(name, pattern) or fnmatchcase(normalized, pattern)):
            return target
    return None


def apply_alias(request: RouteRequest, aliases: Mapping[str, str]) -> str:
    """Point `request` at the fleet model its model is an alias of; the name the client
    asked for if it was one, else "".

    JSON bodies get the new name through `set_body`; a multipart form (audio) has only its
    `model` field's bytes replaced.
    """
    asked = request.body.get("model")
    if not isinstance(asked, str):
        return ""
    target = resolve_alias(aliases, asked)
    if target is None or target == asked:
        return ""
    request.model = normalize_model(target)
    request.asked_model = asked.strip()
    dialect = DIALECTS.get(request.path)
    if dialect is not None and dialect.form:  # every other byte stays the client's
        request.raw = replace_form_field(request.raw, request.headers, "model", asked, target)
        request.body = {**request.body, "model": target}
    else:
        request.set_body({**request.body, "model": target})
    return asked.strip()
