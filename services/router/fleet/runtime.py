"""Runtime settings: overrides stored in Redis and applied by every replica within a second."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from services.router.fleet.core import Core
from services.router.fleet.follow import follow
from shared.background import background
from shared.errors import BadRequest, Conflict
from shared.schemas import SettingView
from shared.settings import (
    RUNTIME_FIELDS,
    Settings,
    SettingsError,
    coerce,
    field_default,
    setting_fields,
)

__all__ = ["RuntimeSettings", "jsonable", "settings_listing", "validate"]

log = logging.getLogger("herd.settings")

RESYNC_INTERVAL = 0.5  # seconds; a replica that missed a message is at most this stale


def jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_listing(settings: Settings) -> list[SettingView]:
    """Every runtime setting with its value, default, help and allowed choices."""
    out = []
    for f in setting_fields():
        if f.name not in RUNTIME_FIELDS:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(SettingView(
            name=f.name,
            value=jsonable(getattr(settings, f.name)),
            default=jsonable(field_default(f)),
            type=kind,
            help=f.metadata["help"],
            choices=list(f.metadata["choices"]),
        ))
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


class RuntimeSettings:
    """This replica's view of the stored overrides, applied to `core.settings`."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.applied: dict[str, Any] = {}  # the overrides last applied here

    async def load(self) -> dict[str, Any]:
        """The stored overrides; a value that no longer validates (older version) is skipped."""
        core = self._core
        raw = await core.redis.hgetall(core.keys.settings())
        out: dict[str, Any] = {}
        for name, text in raw.items():
            if name not in RUNTIME_FIELDS:
                continue
            try:
                out[name] = coerce(name, json.loads(text))
            except (ValueError, SettingsError):
                log.warning("ignoring stored setting", extra={"setting": name, "value": text})
        return out

    def apply(self, overrides: dict[str, Any]) -> bool:
        """Apply stored overrides that differ from those last applied; True if any did.

        Only changes are applied, so a value set directly on core.settings (tests, a plugin)
        stays until someone stores a new value for that setting.
        """
        applied = self.applied
        changed = {k: v for k, v in overrides.items() if k not in applied or applied[k] != v}
        if not changed:
            return False
        self._core.settings = self._core.settings.replace(**changed)
        applied.update(changed)
        return True

    async def save(self, changes: dict[str, Any]) -> None:
        """Store `changes` for every replica, and apply them here at once.

        Conflict, and nothing stored, when they set client_auth to open while a client key
        exists: the check and the write are one script, so a key created meanwhile on
        another replica cannot slip between them (fleet/client_keys.py).
        """
        core = self._core
        pairs: list[str] = []
        for name, value in changes.items():
            pairs += [name, json.dumps(jsonable(value))]
        opens = changes.get("client_auth") == "open"
        held = await core.scripts.run(
            "settings_save", [core.keys.settings(), core.keys.client_keys()],
            ["1" if opens else "0", core.keys.settings_channel(), ",".join(sorted(changes)),
             *pairs],
        )
        if held:
            count = int(held)
            keys, them = ("1 client key exists", "it") if count == 1 else \
                (f"{count} client keys exist", "them")
            raise Conflict(f"{keys}: client_auth stays keys while any key does; revoke "
                           f"{them} first (herd keys revoke APP)")
        self.apply(changes)

    async def write_back(self) -> None:
        """Store the overrides this replica holds again, after Redis came back empty.

        HSETNX: a value another replica stored (or wrote back) first is kept, so a change
        made during the rebuild is not overwritten by an older one.
        """
        if not self.applied:
            return
        core = self._core
        pipe = core.redis.pipeline(transaction=True)
        for name, value in self.applied.items():
            pipe.hsetnx(core.keys.settings(), name, json.dumps(jsonable(value)))
        pipe.publish(core.keys.settings_channel(), ",".join(sorted(self.applied)))
        written = await pipe.execute()
        log.info("runtime settings written back",
                 extra={"settings": sorted(self.applied), "written": sum(written[:-1])})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Apply stored overrides before serving, then follow the settings channel."""
        self.apply(await self.load())
        async with background(self._follow(), "herd-settings-watcher"):
            yield

    async def _follow(self) -> None:
        core = self._core
        await follow(core.redis, core.keys.settings_channel(), "settings watcher", self._heard,
                     wait=lambda: RESYNC_INTERVAL, logger=log)

    async def _heard(self, message: str | None) -> None:
        """A message, or a quiet interval: re-read either way (fleet/follow.py)."""
        if self.apply(await self.load()):
            log.info("runtime settings applied",
                     extra={"trigger": "message" if message is not None else "resync"})
