"""Client keys: one secret per app, with limits, checked from a local view Redis keeps current.

A key is `herd-` + 32 random bytes; Redis holds only its SHA-256 digest (a fast hash is
enough for a random 256-bit secret: there is nothing to brute-force). Each replica keeps
the digests in memory, reloaded on a message on `keys.keys_channel()` and every
RESYNC_INTERVAL besides, so checking a key costs no Redis round trip and a revoked key is
refused everywhere within a second. A lookup goes by digest, then the digests are compared
with `hmac.compare_digest`: the timing of a check says nothing about the secret.

Who needs a credential is the runtime setting `client_auth`, and it fails closed:
- `open`: a request without a credential is served, but only while no key exists and no
  client token is set;
- `keys`: every request needs a client key, the client token or the admin token, whether
  or not a key is left.
Creating a key sets `keys` in the same script that stores it (key_create.lua), and so does
revoking one (key_revoke.lua): revoking a leaked key before its replacement exists leaves
the fleet closed. Only an admin sets `open` again, and the settings script refuses it while
a key exists (settings_save.lua), so `open` never stands beside a stored key. A fleet with
keys from before the setting existed counts as `keys` (`running` stores it). Each replica
follows the mode through the runtime settings watcher (pub/sub and the same half-second
resync as the keys); a replica that has seen a key but not yet the mode is closed anyway.

Limits are counted fleet-wide in per-minute windows (shared/lua/rate.lua): only a key with
a limit pays one round trip to be admitted, and its tokens, as the node reported them at
the end, ride on the round trip that records the request (`add_usage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from services.router.fleet.core import Core
from services.router.fleet.follow import follow
from services.router.fleet.runtime import RuntimeSettings
from shared.background import background
from shared.errors import BadRequest, Conflict, NotFound, RateLimited, Unauthorized
from shared.fastredis import FastPipeline

__all__ = [
    "CLOSED",
    "OPEN",
    "ClientKeys",
    "KeyListing",
    "KeyRecord",
    "digest",
    "valid_app",
    "validate_new_key",
]

log = logging.getLogger("herd.keys")

OPEN, CLOSED = "open", "keys"  # the values of the client_auth setting
_CLOSED_JSON = json.dumps(CLOSED)  # as the settings hash stores it
RESYNC_INTERVAL = 0.5  # seconds: a replica that missed a revocation message is this stale
WINDOW_TTL = 120  # a minute's counters outlive their minute, for the token total at its end
MAX_LIMIT = 10**9
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def valid_app(app: Any) -> str:
    """The app name, or BadRequest: 1-64 of letters, digits, '.', '_', '-' (it becomes a tag
    and part of a Redis key, so nothing that could split either)."""
    if not isinstance(app, str) or not _APP.fullmatch(app):
        raise BadRequest("app must be a string of 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return app


def _limit(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise BadRequest(f"{name} must be an integer from 0 (no limit) to {MAX_LIMIT}")
    return value


def validate_new_key(body: Any) -> tuple[str, int, int]:
    """A create request's app and limits, or BadRequest naming the field that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object such as {"app": "chatbot", '
                         '"requests_per_minute": 60, "tokens_per_minute": 0}')
    unknown = sorted(set(body) - {"app", "requests_per_minute", "tokens_per_minute"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    return (valid_app(body.get("app")), _limit(body, "requests_per_minute"),
            _limit(body, "tokens_per_minute"))


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What Redis keeps of a key: never the secret."""

    app: str
    digest: str
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    created: float = 0.0

    @property
    def limited(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)


@dataclass(frozen=True, slots=True)
class KeyListing:
    app: str
    requests_per_minute: int
    tokens_per_minute: int
    created: float
    last_used: float | None


def _decode(app: str, text: str) -> KeyRecord | None:
    try:
        data = json.loads(text)
        return KeyRecord(app=app, digest=str(data["digest"]),
                         requests_per_minute=int(data.get("requests_per_minute", 0)),
                         tokens_per_minute=int(data.get("tokens_per_minute", 0)),
                         created=float(data.get("created", 0.0)))
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring a malformed client key record", extra={"app": app})
        return None


class ClientKeys:
    """This replica's view of the fleet's client keys, and the checks made with it."""

    def __init__(self, core: Core, runtime: RuntimeSettings) -> None:
        self._core = core
        self._runtime = runtime  # client_auth is a runtime setting: applied through it
        self.by_digest: dict[str, KeyRecord] = {}  # replaced whole, never mutated
        self._used: dict[str, float] = {}  # app -> last use here, not yet written

    # --- the request path: no I/O unless the key has a limit ---------------------------

    def mode(self) -> str:
        """client_auth as this replica applies it: `keys` as well while it knows of a key
        (a key seen before the mode that came with it, or keys older than the setting)."""
        return CLOSED if self.by_digest else self._core.settings.client_auth

    def is_open(self) -> bool:
        """True when a request without any credential is served here."""
        settings = self._core.settings
        return (not self.by_digest and settings.client_auth == OPEN
                and not settings.client_token)

    def authenticate(self, authorization: str) -> KeyRecord | None:
        """The key's record; None when inference is open or a shared token was given.

        Raises Unauthorized when a credential is needed (client_auth is keys, a key
        exists, or the client token is set) and the request has no valid one. The admin
        token is a credential too.
        """
        if self.is_open():
            return None
        settings = self._core.settings
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("this endpoint needs an API key: Authorization: Bearer <key> "
                               "(or x-api-key: <key>)")
        given = value.encode("utf-8", "replace")
        for token in (settings.client_token, settings.admin_token):
            if token and hmac.compare_digest(given, token.encode()):
                return None
        wanted = digest(value)
        record = self.by_digest.get(wanted)
        if record is None or not hmac.compare_digest(record.digest, wanted):
            raise Unauthorized("invalid API key")
        self._used[record.app] = time.time()
        return record

    async def admit(self, record: KeyRecord | None, now: float | None = None) -> None:
        """Count one request against the key's limits, or raise RateLimited (429)."""
        if record is None or not record.limited:
            return
        now = time.time() if now is None else now
        minute = int(now // 60)
        core = self._core
        try:
            verdict = await core.scripts.run(
                "rate",
                [core.keys.rate_requests(record.app, minute),
                 core.keys.rate_tokens(record.app, minute)],
                [record.requests_per_minute, record.tokens_per_minute, WINDOW_TTL],
            )
        except (RedisError, OSError) as exc:
            # Redis being away fails the request at its slot anyway; do not say 429 for it.
            log.warning("rate limit not checked", extra={"app": record.app, "error": str(exc)})
            return
        if not verdict:
            return
        retry = max(1, math.ceil(60 - now % 60))
        what = (f"{record.requests_per_minute} requests" if int(verdict) == 1
                else f"{record.tokens_per_minute} tokens")
        raise RateLimited(f"app {record.app!r} is over its limit of {what} per minute; "
                          f"retry in {retry} s", retry)

    def add_usage(self, pipe: Pipeline | FastPipeline, record: KeyRecord | None, tokens: int,
                  now: float | None = None) -> None:
        """Queue the tokens a finished request used on `pipe` (the request's last round
        trip), when its key has a token limit."""
        if record is None or not record.tokens_per_minute or tokens <= 0:
            return
        now = time.time() if now is None else now
        key = self._core.keys.rate_tokens(record.app, int(now // 60))
        pipe.incrby(key, tokens)
        pipe.expire(key, WINDOW_TTL)

    # --- management (the keys API) ------------------------------------------------------

    async def create(self, app: str, requests_per_minute: int = 0,
                     tokens_per_minute: int = 0) -> tuple[str, KeyRecord]:
        """A new key for `app` (Conflict if it has one): the secret, shown only now."""
        secret = "herd-" + secrets.token_urlsafe(32)
        record = KeyRecord(app=app, digest=digest(secret), requests_per_minute=requests_per_minute,
                           tokens_per_minute=tokens_per_minute, created=round(time.time(), 3))
        fields = asdict(record)
        del fields["app"]
        core = self._core
        created = await core.scripts.run(
            "key_create", [core.keys.client_keys(), core.keys.settings()],
            [app, json.dumps(fields), _CLOSED_JSON, core.keys.keys_channel(),
             core.keys.settings_channel()],
        )
        if not created:
            raise Conflict(f"app {app!r} already has a key; revoke it first")
        self.by_digest = {**self.by_digest, record.digest: record}
        self._runtime.apply({"client_auth": CLOSED})
        return secret, record

    async def revoke(self, app: str) -> None:
        """Remove the app's key everywhere; inference stays closed (client_auth: keys)."""
        core = self._core
        removed = await core.scripts.run(
            "key_revoke",
            [core.keys.client_keys(), core.keys.client_keys_used(), core.keys.settings()],
            [app, _CLOSED_JSON, core.keys.keys_channel(), core.keys.settings_channel()],
        )
        self._used.pop(app, None)
        if not removed:
            raise NotFound(f"app {app!r} has no key")
        self._runtime.apply({"client_auth": CLOSED})
        self.by_digest = {d: r for d, r in self.by_digest.items() if r.app != app}

    async def listing(self) -> list[KeyListing]:
        core = self._core
        pipe = core.redis.pipeline(transaction=False)
        pipe.hgetall(core.keys.client_keys())
        pipe.hgetall(core.keys.client_keys_used())
        stored, used = await pipe.execute()
        out = []
        for app, text in sorted(stored.items()):
            record = _decode(app, text)
            if record is None:
                continue
            seen = max(self._used.get(app, 0.0), float(used.get(app, 0) or 0)) or None
            out.append(KeyListing(app, record.requests_per_minute, record.tokens_per_minute,
                                  record.created, seen))
        return out

    # --- keeping the view current -------------------------------------------------------

    async def load(self) -> dict[str, KeyRecord]:
        core = self._core
        raw = await core.redis.hgetall(core.keys.client_keys())
        records = (_decode(app, text) for app, text in raw.items())
        return {r.digest: r for r in records if r is not None}

    async def resync(self) -> None:
        """Reload the view from Redis (what the watcher does on a message or a quiet
        interval; the mode follows through the runtime settings watcher)."""
        self.by_digest = await self.load()

    async def close_if_keys(self) -> None:
        """Store client_auth = keys when keys exist and no mode is stored: the keys of a
        fleet older than the setting keep it closed once the last of them is revoked.

        HSETNX: a mode an admin stored is never overwritten (and `open` cannot be stored
        beside a key in the first place).
        """
        if not self.by_digest:
            return
        core = self._core
        if await core.redis.hsetnx(core.keys.settings(), "client_auth", _CLOSED_JSON):
            await core.redis.publish(core.keys.settings_channel(), "client_auth")
            log.info("client keys exist: client_auth set to keys")
        self._runtime.apply(await self._runtime.load())

    async def flush_used(self) -> None:
        """Write the last-use times gathered since the last flush (one HSET)."""
        if not self._used:
            return
        used, self._used = self._used, {}
        core = self._core
        await core.redis.hset(core.keys.client_keys_used(),
                              mapping={app: round(ts, 3) for app, ts in used.items()})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.by_digest = await self.load()
        await self.close_if_keys()
        async with background(self._follow(), "herd-keys-watcher"):
            try:
                yield
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await self.flush_used()

    async def _follow(self) -> None:
        core = self._core
        await follow(core.redis, core.keys.keys_channel(), "keys watcher", self._heard,
                     wait=lambda: RESYNC_INTERVAL, logger=log)

    async def _heard(self, _message: str | None) -> None:
        """A message, or a quiet interval: reload either way (fleet/follow.py)."""
        await self.resync()
        await self.flush_used()
