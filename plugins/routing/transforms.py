"""Built-in transforms: context protection (num_ctx) and tag extraction."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from shared.hookspecs import hookimpl
from shared.routing import RouteRequest, ScoringContext, Transform, TransformNote

__all__ = ["ContextProtection", "Conversation", "Tags", "herd_register_transforms"]

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
    """A `num_ctx` different from a loaded copy's context makes Ollama reload the model.

    strip: remove it when a loaded copy already has at least that context (the scorer then
    prefers such a copy); keep it when more context is needed than any copy has. warn: only
    log. passthrough: nothing. Herd never invents a num_ctx.
    """

    name = "context_protection"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        options = request.options()
        wanted = _as_int(options.get("num_ctx")) if "num_ctx" in options else 0
        if wanted <= 0:
            return
        request.requested_num_ctx = wanted
        mode = context.settings.context_protection
        if mode == "passthrough":
            return
        loaded = [
            (node.node_id, copy.context_length)
            for node in context.snapshot.servable_with(request.model)
            if (copy := node.loaded(request.model)) is not None and copy.context_length
        ]
        if not loaded or all(ctx == wanted for _, ctx in loaded):
            return  # nothing loaded, or already loaded with exactly this context: no reload
        largest = max(ctx for _, ctx in loaded)
        fields = {
            "model": request.model, "num_ctx": wanted, "loaded_context": largest,
            "request_id": request.request_id, "mode": mode,
        }
        if wanted > largest:
            message = (
                f"Context protection: kept num_ctx={wanted} for {request.model}, larger than "
                f"any loaded copy ({largest}); it will load where it fits"
            )
            action = "kept"
        elif mode == "warn":
            message = (
                f"Context protection (warn): num_ctx={wanted} would reload {request.model} "
                f"(loaded with {largest}); passed through"
            )
            action = "warned"
        else:
            new_options = {k: v for k, v in options.items() if k != "num_ctx"}
            body = dict(request.body)
            if new_options:
                body["options"] = new_options
            else:
                body.pop("options", None)
            request.set_body(body)
            message = (
                f"Context protection: stripped num_ctx={wanted} from a {request.model} request "
                f"(loaded with {largest}), avoiding a reload"
            )
            action = "stripped"
        fields["action"] = action
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
    """Names a chat by its opening (system prompt and first user message) and model, so its
    later turns can go back to the node whose prompt cache already holds the earlier ones.

    Only the opening is hashed: every later turn repeats it, whatever came after.
    """

    name = "conversation"

    def apply(self, request: RouteRequest, context: ScoringContext) -> None:
        if request.endpoint != "chat":
            return
        messages = request.body.get("messages")
        if not isinstance(messages, list):
            return
        opening: list[Any] = []
        for message in messages:
            opening.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                break
        else:
            return  # no user message: nothing that identifies a conversation
        digest = hashlib.blake2b(msgspec.json.encode([request.model, opening]), digest_size=12)
        request.session_key = digest.hexdigest()


@hookimpl
def herd_register_transforms() -> list[Transform]:
    return [ContextProtection(), Tags(), Conversation()]
