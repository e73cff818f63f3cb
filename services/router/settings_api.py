"""Runtime settings: GET/POST /dashboard/api/settings, stored in Redis, applied by every replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from redis.exceptions import RedisError

from services.router.background import background
from services.router.context import RouterContext
from shared.auth import require_bearer
from shared.errors import BadRequest
from shared.settings import RUNTIME_FIELDS, Settings, SettingsError, coerce, setting_fields

__all__ = [
    "ROUTES",
    "apply_overrides",
    "load_overrides",
    "require_admin",
    "runtime_settings_lifecycle",
    "save_overrides",
    "settings_listing",
]

log = logging.getLogger("herd.settings")

RESYNC_INTERVAL = 0.5  # seconds; a replica that missed a message is at most this stale


def require_admin(ctx: RouterContext, request: Request[Any, Any, Any]) -> None:
    """401 unless the request carries `Authorization: Bearer <admin_token>` (when one is set)."""
    require_bearer(request.headers.get("authorization", ""), ctx.settings.admin_token,
                   "this endpoint needs Authorization: Bearer <admin token>")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_listing(settings: Settings) -> list[dict[str, Any]]:
    """Every runtime setting with its value, default, help and allowed choices."""
    out = []
    for f in setting_fields():
        if f.name not in RUNTIME_FIELDS:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({
            "name": f.name,
            "value": _jsonable(getattr(settings, f.name)),
            "default": _jsonable(f.default),
            "type": kind,
            "help": f.metadata["help"],
            "choices": list(f.metadata["choices"]),
        })
    return out


def validate(changes: Any) -> dict[str, Any]:
    """A partial settings object → coerced values, or BadRequest naming the bad key."""
    if not isinstance(changes, dict) or not changes:
        raise BadRequest("send a non-empty JSON object of settings, e.g. {\"auto_pull\": false}")
    valid: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in RUNTIME_FIELDS:
            known = any(f.name == name for f in setting_fields())
            raise BadRequest(
                f"setting {name!r} cannot be changed at run time" if known
                else f"unknown setting {name!r}"
            )
        try:
            valid[name] = coerce(name, value)
        except SettingsError as exc:
            raise BadRequest(str(exc)) from None
    return valid


async def load_overrides(ctx: RouterContext) -> dict[str, Any]:
    """The stored overrides; a value that no longer validates (older version) is skipped."""
    raw = await ctx.redis.hgetall(ctx.keys.settings())
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in RUNTIME_FIELDS:
            continue
        try:
            out[name] = coerce(name, json.loads(text))
        except (ValueError, SettingsError):
            log.warning("ignoring stored setting", extra={"setting": name, "value": text})
    return out


def apply_overrides(ctx: RouterContext, overrides: dict[str, Any]) -> bool:
    """Apply stored overrides that differ from those last applied; True if any did.

    Only changes are applied, so a value set directly on ctx.settings (tests, a plugin)
    stays until someone stores a new value for that setting.
    """
    applied = ctx.parts.setdefault("applied_settings", {})
    assert isinstance(applied, dict)
    changed = {k: v for k, v in overrides.items() if k not in applied or applied[k] != v}
    if not changed:
        return False
    ctx.settings = ctx.settings.replace(**changed)
    applied.update(changed)
    return True


async def save_overrides(ctx: RouterContext, changes: dict[str, Any]) -> None:
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hset(ctx.keys.settings(), mapping={
        name: json.dumps(_jsonable(value)) for name, value in changes.items()
    })
    pipe.publish(ctx.keys.settings_channel(), ",".join(sorted(changes)))
    await pipe.execute()


@contextlib.asynccontextmanager
async def runtime_settings_lifecycle(ctx: RouterContext) -> AsyncIterator[None]:
    """Apply stored overrides before serving, then follow the settings channel."""
    apply_overrides(ctx, await load_overrides(ctx))

    async def follow() -> None:
        while True:
            pubsub = ctx.redis.pubsub()
            try:
                await pubsub.subscribe(ctx.keys.settings_channel())
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=RESYNC_INTERVAL)
                    # Re-read on a message and on every quiet interval: a message lost
                    # while reconnecting costs at most one interval.
                    if apply_overrides(ctx, await load_overrides(ctx)):
                        log.info("runtime settings applied",
                                 extra={"trigger": "message" if message else "resync"})
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("settings watcher lost Redis; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async with background(follow(), "herd-settings-watcher"):
        yield


def _body(ctx: RouterContext) -> dict[str, Any]:
    return {"settings": settings_listing(ctx.settings)}


@get("/dashboard/api/settings")
async def get_settings(state: State) -> dict[str, Any]:
    return _body(state.herd)


@post("/dashboard/api/settings", status_code=200)
async def post_settings(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    ctx: RouterContext = state.herd
    require_admin(ctx, request)
    try:
        changes = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    valid = validate(changes)
    await save_overrides(ctx, valid)
    apply_overrides(ctx, valid)
    return {"updated": {k: _jsonable(v) for k, v in valid.items()}, **_body(ctx)}


ROUTES = [get_settings, post_settings]
