"""Faults switched on at run time (POST /sim/fault) or at start (--fault)."""

from __future__ import annotations

import asyncio
import random
from enum import StrEnum
from typing import Any

__all__ = ["FaultMode", "FaultState", "parse_fault_flag"]


class FaultMode(StrEnum):
    NONE = "none"
    REFUSE = "refuse"  # stop listening and reset open connections: "connection refused"
    ERROR500 = "error500"  # answer {"error": ...} with status 500 (or `status`)
    HANG = "hang"  # accept, then never answer (after `after_tokens` tokens when streaming)
    SLOW = "slow"  # everything `factor` times slower, plus `delay_s` before answering
    DIE_MID_STREAM = "die_mid_stream"  # close the connection after `after_tokens` tokens


_FLOAT_PARAMS = {"probability": 1.0, "factor": 10.0, "delay_s": 0.0, "seconds": 0.0}
_INT_PARAMS = {"count": 0, "status": 500}


class FaultState:
    """The current fault and its parameters; `pick` decides per request."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._changed: asyncio.Event | None = None
        self.set("none", {})

    def set(self, mode: str, params: dict[str, Any], *, wake: bool = True) -> None:
        """Switch mode; raises ValueError on an unknown mode or a bad parameter.

        Hung requests wake (and are cut off) when the fault is switched, not when `count`
        runs out: that would end the hang the count asked for.
        """
        self.mode = FaultMode(mode)
        self.params: dict[str, Any] = {}
        for name, default in _FLOAT_PARAMS.items():
            self.params[name] = float(params.get(name, default))
        for name, default_int in _INT_PARAMS.items():
            self.params[name] = int(params.get(name, default_int))
        # die_mid_stream cuts after 5 tokens by default; hang by default sends nothing at all.
        after = params.get("after_tokens", 5 if self.mode is FaultMode.DIE_MID_STREAM else -1)
        self.params["after_tokens"] = int(after)
        paths = params.get("paths")
        if paths is not None and not (
                isinstance(paths, list) and all(isinstance(p, str) for p in paths)):
            raise ValueError("paths must be a list of path prefixes")
        self.params["paths"] = paths
        self.params["message"] = str(params.get("message", "simulated internal error"))
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        if not 0.0 <= self.params["probability"] <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.params["factor"] <= 0:
            raise ValueError("factor must be positive")
        self.remaining = self.params["count"] or None
        if wake and self._changed is not None:
            self._changed.set()
            self._changed = None

    def describe(self) -> dict[str, Any]:
        return {"mode": str(self.mode), **self.params, "remaining": self.remaining}

    def pick(self, path: str) -> FaultMode:
        """The fault this request suffers (NONE for most); counts down `count`."""
        if self.mode is FaultMode.NONE or path.startswith("/sim/"):
            return FaultMode.NONE
        paths = self.params["paths"]
        if paths is not None and not any(path.startswith(p) for p in paths):
            return FaultMode.NONE
        if self.params["probability"] < 1.0 and self._rng.random() >= self.params["probability"]:
            return FaultMode.NONE
        mode = self.mode
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.set("none", {}, wake=False)
        return mode

    async def until_changed(self) -> None:
        """Sleep until the fault is switched (used by hung requests)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()


def parse_fault_flag(text: str) -> tuple[str, dict[str, Any]]:
    """`slow:factor=5,delay_s=0.5` -> ("slow", {"factor": "5", "delay_s": "0.5"})."""
    mode, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault parameter {item!r} is not key=value")
        params[key.strip()] = value.strip().split("|") if key.strip() == "paths" else value
    FaultState().set(mode.strip(), params)  # validate now, at start
    return mode.strip(), params
