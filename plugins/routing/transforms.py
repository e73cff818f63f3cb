"""Built-in transforms: context protection (num_ctx), tags, conversations, priority, and
the refusal of a request that fits on no node."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from shared.errors import BadRequest
from shared.fit import FitReport, fits, report
from shared.hookspecs import hookimpl
from shared.models import NodeStatus
from shared.routing import PRIORITIES, RouteRequest, ScoringContext, Transform, TransformNote

__all__ = [
    "ContextProtection",
    "Conversation",
    "FitsSomewhere",
    "Priority",
    "Tags",
    "herd_register_transforms",
]

MAX_SESSION_ID = 256  # longer X-Herd-Session values are refused

log = logging.getLogger("herd.routing")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


class ContextProtection:
    """Ollama reloads a model whenever a request's num_ctx differs from its loaded copy's
    context (no num_ctx means the node's default, `default_num_ctx`).

    strip: a request whose num_ctx (or the default, without one) a loaded copy already
    covers is sent that copy's own num_ctx, so the copy serves it as it is: the option is
    removed where the copy has the default context, and set to the copy's value per node
    (RouteRequest.node_num_ctx) where the copy was loaded larger. A num_ctx larger than any
    copy's is kept (the context scorer then prefers copies that have it, and it loads where
    it fits). warn: only log. passthrough: nothing. Herd never invents a num_ctx: the only
    values it sends are the client's own and those the nodes loaded.
    """

    name = "context_protection"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        if request.fixed_body:  # its API carries no options for Ollama to read
            return
        options = request.options()
        wanted = _as_int(options.get("num_ctx")) if "num_ctx" in options else 0
        if wanted > 0:
            request.requested_num_ctx = wanted
        mode = context.settings.context_protection
        if mode == "passthrough":
            return
        default = context.settings.default_num_ctx
        sent = wanted or default  # what the node would load the copy with
        loaded = [
            (node.node_id, copy.context_length)
            for node in context.snapshot.servable_with(request.model)
            if (copy := node.loaded(request.model)) is not None and copy.context_length
        ]
        if not loaded or all(ctx == sent for _, ctx in loaded):
            return  # nothing loaded, or loaded with exactly this context: no reload
        largest = max(ctx for _, ctx in loaded)
        # copies that hold what the request needs, each with its own context
        covering = {node_id: ctx for node_id, ctx in loaded if ctx >= sent}
        if wanted > largest:
            case = "kept"
            fit = fit_report(request, context)
            if fit.nowhere:
                where = f"no node can hold it ({fit.need.gb:.1f} GB or more)"
            elif fit.ruled_out:
                where = (f"it will load where it fits (not on {', '.join(fit.ruled_out)}: "
                         f"too small)")
            else:
                where = "it will load where it fits"
            message = (
                f"Context protection: kept num_ctx={wanted} for {request.model}, larger than "
                f"any loaded copy ({largest}); {where}"
            )
        elif not covering:
            return  # only copies smaller than the default: a reload nobody can spare
        elif mode == "warn":
            case = "warned"
            asked = f"num_ctx={wanted}" if wanted else f"no num_ctx (default {default})"
            message = (
                f"Context protection (warn): {asked} would reload {request.model} "
                f"(loaded with {largest}); passed through"
            )
        else:
            strip = 0 < wanted <= default and default in covering.values()
            body_ctx = default if strip else sent
            request.node_num_ctx = {n: c for n, c in covering.items() if c != body_ctx}
            if not strip and not request.node_num_ctx:
                return
            if strip:
                new_options = {k: v for k, v in options.items() if k != "num_ctx"}
                body = dict(request.body)
                if new_options:
                    body["options"] = new_options
                else:
                    body.pop("options", None)
                request.set_body(body)
            where = ", ".join(f"{n}={c}" for n, c in sorted(request.node_num_ctx.items()))
            if not wanted:
                case = "inherited"
                message = (
                    f"Context protection: a {request.model} request without num_ctx gets the "
                    f"loaded copy's num_ctx ({where}) instead of reloading at the default "
                    f"{default}"
                )
            elif strip:
                case = "stripped"
                message = (
                    f"Context protection: stripped num_ctx={wanted} from a {request.model} "
                    f"request (loaded with {default}), avoiding a reload"
                    + (f"; other copies get their own num_ctx ({where})" if where else "")
                )
            else:
                case = "matched"
                message = (
                    f"Context protection: num_ctx={wanted} for {request.model} becomes the "
                    f"loaded copy's ({where}), avoiding a reload"
                )
        fields = {
            "model": request.model, "num_ctx": wanted, "loaded_context": largest,
            "default_num_ctx": default, "request_id": request.request_id, "mode": mode,
            "action": case, "nodes": dict(request.node_num_ctx),
        }
        log.info(message, extra=fields)
        request.notes.append(TransformNote("context_protection", message, fields))


class Tags:
    """Tags for the dashboard's "apps": `X-Herd-Tags: a,b`, body `metadata.tags`, `user`."""

    name = "tags"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        found: list[str] = []
        header = request.headers.get("x-herd-tags", "")
        if header:
            found.extend(part.strip() for part in header.split(","))
        metadata = request.body.get("metadata")
        if isinstance(metadata, dict):
            tags = metadata.get("tags")
            if isinstance(tags, str):
                found.extend(part.strip() for part in tags.split(","))
            elif isinstance(tags, list):
                found.extend(str(tag).strip() for tag in tags if isinstance(tag, str | int))
        user = request.body.get("user")
        if isinstance(user, str) and user.strip():
            found.append(user.strip())
        if found:
            merged = request.tags + [tag[:64] for tag in found if tag]
            request.tags = list(dict.fromkeys(merged))[:16]


class Conversation:
    """Names a conversation, so its later turns can go back to the node whose prompt cache
    already holds the earlier ones: `X-Herd-Session: <id>` on any endpoint (with the model),
    else OpenAI's `prompt_cache_key` in the body (Codex sends its conversation's id there),
    else the conversation's opening and model: a chat's system prompt and first user
    message (Ollama's and OpenAI's chat), Anthropic Messages' `system` and first user
    message, an OpenAI Responses request's `instructions` and first user item of `input`.

    Only the opening is hashed: every later turn repeats it, whatever came after.
    """

    name = "conversation"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        explicit = request.headers.get("x-herd-session", "").strip()
        if not explicit:
            cache_key = request.body.get("prompt_cache_key")
            explicit = cache_key.strip()[:MAX_SESSION_ID] if isinstance(cache_key, str) else ""
        if explicit:
            if len(explicit) > MAX_SESSION_ID:
                raise BadRequest(f"X-Herd-Session is longer than {MAX_SESSION_ID} characters")
            digest = hashlib.blake2b(
                msgspec.json.encode([request.model, "session", explicit]), digest_size=12)
            request.session_key = digest.hexdigest()
            return
        opening = _opening(request.endpoint, request.body)
        if opening is None:
            return  # no user turn: nothing that identifies a conversation
        digest = hashlib.blake2b(msgspec.json.encode([request.model, opening]), digest_size=12)
        request.session_key = digest.hexdigest()


def _first_turn(items: Any) -> list[Any] | None:
    """The items up to and with the first user turn; None without one."""
    if not isinstance(items, list):
        return None
    opening: list[Any] = []
    for item in items:
        opening.append(item)
        if isinstance(item, dict) and item.get("role") == "user":
            return opening
    return None


def _opening(endpoint: str, body: dict[str, Any]) -> list[Any] | None:
    """What every turn of a conversation repeats, by API; None if the request has none."""
    if endpoint == "chat":
        return _first_turn(body.get("messages"))
    if endpoint == "messages":  # Anthropic: the system prompt is a field of its own
        turn = _first_turn(body.get("messages"))
        return None if turn is None else ["messages", body.get("system"), *turn]
    if endpoint == "responses":  # `input` is a string (one turn) or the items so far
        given = body.get("input")
        turn = [given] if isinstance(given, str) and given else _first_turn(given)
        return None if turn is None else ["responses", body.get("instructions"), *turn]
    return None


class Priority:
    """`X-Herd-Priority: high | normal | low` orders a request within its app's share of
    the fair queue; `high` also goes ahead of every `normal` request (docs/queueing.md)."""

    name = "priority"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        asked = request.headers.get("x-herd-priority", "").strip().lower()
        if not asked:
            return
        if asked not in PRIORITIES:
            raise BadRequest(
                f"X-Herd-Priority must be one of {', '.join(PRIORITIES)}, got {asked[:40]!r}")
        request.priority = asked


def fit_report(request: RouteRequest, context: ScoringContext) -> FitReport:
    """Which of the nodes with the model (online or not, offline aside: a degraded node
    may recover) surely cannot load it with the request's num_ctx (shared/fit.py)."""
    model = request.model
    nodes = [n for n in context.snapshot.nodes.values()
             if n.status is not NodeStatus.OFFLINE and n.has_model(model)]
    return report(nodes, model, request.num_ctx_for, context.snapshot.refusals(model),
                  context.slots)


class FitsSomewhere:
    """A request that surely fits on no node (the model with its num_ctx needs more memory
    than any node with the model has, by the estimate in shared/fit.py) is the client's
    error: a 400 at once that names the model, num_ctx, the need and the largest node,
    instead of trying every node, each refusing. An estimate that is unsure lets it
    through: the nodes decide, and what they say is learned."""

    name = "fits_somewhere"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        num_ctx = request.num_ctx_for("")  # the body's own, as the client asked
        if not num_ctx:
            # Without one the need is the weights alone, which the fit filter already
            # judges; judging every node here would cost each request of a large fleet.
            return
        model, snapshot = request.model, context.snapshot
        refusals = snapshot.refusals(model)
        for node in snapshot.nodes.values():  # most requests stop at the first node
            if node.status is not NodeStatus.OFFLINE and node.has_model(model) and fits(
                    node, model, request.num_ctx_for(node.node_id), refusals,
                    context.slots(node)):
                return
        fit = fit_report(request, context)
        if fit.nowhere:
            raise BadRequest(fit.message(model, num_ctx))


@hookimpl
def herd_register_transforms() -> list[Transform]:
    return [ContextProtection(), Tags(), Conversation(), Priority(), FitsSomewhere()]
