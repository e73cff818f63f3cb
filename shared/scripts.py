"""Lua scripts: loaded from shared/lua/ with importlib.resources and run by SHA."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["Scripts", "script_source"]


@cache
def script_source(name: str) -> str:
    """The text of shared/lua/<name>.lua."""
    return resources.files("shared").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """The scripts registered on one client; `await scripts.run("name", keys, args)`."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._registered: dict[str, AsyncScript] = {}

    def get(self, name: str) -> AsyncScript:
        script = self._registered.get(name)
        if script is None:
            script = self._redis.register_script(script_source(name))
            self._registered[name] = script
        return script

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        # AsyncScript falls back from EVALSHA to EVAL (and caches) by itself.
        return await self.get(name)(keys=keys, args=args)
