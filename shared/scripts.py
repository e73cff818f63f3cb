"""Lua scripts: loaded from shared/lua/ with importlib.resources and run by SHA."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from shared.fastredis import FastRedis

__all__ = ["Scripts", "script_sha", "script_source"]


_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@cache
def script_source(name: str) -> str:
    """The text of shared/lua/<name>.lua, with each `--@include other` line replaced by
    the text of other.lua (helpers several scripts share, such as the queue's books)."""
    text = resources.files("shared").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: script_source(m.group(1)), text)


@cache
def script_sha(name: str) -> str:
    """The SHA1 Redis knows `script_source(name)` by (EVALSHA)."""
    return hashlib.sha1(script_source(name).encode(), usedforsecurity=False).hexdigest()


class Scripts:
    """The scripts registered on one client; `await scripts.run("name", keys, args)`.

    With a FastRedis (the router's request path), scripts run over it by SHA, falling back
    to EVAL (which also caches the script) after a Redis restart or a script flush.
    """

    def __init__(self, redis: Redis, fast: FastRedis | None = None) -> None:
        self._redis = redis
        self._fast = fast
        self._registered: dict[str, AsyncScript] = {}

    def get(self, name: str) -> AsyncScript:
        script = self._registered.get(name)
        if script is None:
            script = self._redis.register_script(script_source(name))
            self._registered[name] = script
        return script

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        fast = self._fast
        if fast is None:
            # AsyncScript falls back from EVALSHA to EVAL (and caches) by itself.
            return await self.get(name)(keys=keys, args=args)
        try:
            return await fast.execute("EVALSHA", script_sha(name), len(keys), *keys, *args)
        except NoScriptError:
            return await fast.execute("EVAL", script_source(name), len(keys), *keys, *args)
