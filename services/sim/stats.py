"""What the node observed: counters per model and in total, and the last request bodies."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Counters", "Stats"]


@dataclass
class Counters:
    """Counters of one model (or of the whole node)."""

    requests: int = 0  # requests received that name this model
    served: int = 0  # finished with a complete answer
    failed: int = 0  # ended by an error or a fault
    in_flight: int = 0  # received and not finished (waiting or running)
    max_in_flight: int = 0
    running: int = 0  # holding a parallel slot
    max_running: int = 0
    queued: int = 0  # waiting in the node's own queue (for a slot, a load or memory)
    max_queued: int = 0
    loads: int = 0
    evictions: int = 0  # unloaded to make room (memory or max loaded models)
    expirations: int = 0  # unloaded by keep_alive
    reloads: int = 0  # unloaded because a request asked for another num_ctx
    prompt_cache_hits: int = 0
    prompt_cache_misses: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    eval_tokens: int = 0


_GAUGES = (("in_flight", "max_in_flight"), ("running", "max_running"), ("queued", "max_queued"))


class Stats:
    """Counters kept per model and for the whole node; `add` updates both."""

    def __init__(self, node_name: str, keep_bodies: int) -> None:
        self.node_name = node_name
        self.keep_bodies = keep_bodies
        self.reset()

    def reset(self) -> None:
        """Zero every counter; gauges (in flight, running, queued) keep their current value."""
        old = [("", getattr(self, "total", Counters()))]
        old += list(getattr(self, "models", {}).items())
        self.started = time.time()
        self.total = Counters()
        self.models: dict[str, Counters] = {}
        for name, counters in old:
            fresh = self.model(name) if name else self.total
            for gauge, peak in _GAUGES:
                value = getattr(counters, gauge)
                setattr(fresh, gauge, value)
                setattr(fresh, peak, value)
        self.models = {n: c for n, c in self.models.items() if c.in_flight}
        self.bodies: deque[dict[str, Any]] = deque(maxlen=max(self.keep_bodies, 0))
        self.faults_triggered = 0
        self.http_requests = 0

    def model(self, name: str) -> Counters:
        counters = self.models.get(name)
        if counters is None:
            counters = self.models[name] = Counters()
        return counters

    def add(self, name: str, field: str, amount: int = 1) -> None:
        for counters in (self.total, self.model(name)):
            value = getattr(counters, field) + amount
            setattr(counters, field, value)
            for gauge, peak in _GAUGES:
                if field == gauge and value > getattr(counters, peak):
                    setattr(counters, peak, value)

    def record_body(self, path: str, body: object,
                    headers: dict[str, str] | None = None) -> None:
        entry: dict[str, Any] = {"time": time.time(), "path": path, "body": body}
        if headers:
            entry["headers"] = headers
        self.bodies.append(entry)

    def snapshot(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "node": self.node_name,
            "since": self.started,
            "http_requests": self.http_requests,
            "faults_triggered": self.faults_triggered,
            "total": asdict(self.total),
            "models": {name: asdict(c) for name, c in sorted(self.models.items())},
            "last_requests": list(self.bodies),
            **(extra or {}),
        }
