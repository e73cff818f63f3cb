"""Which Ollama version the fleet serves, as /api/version answers it.

Clients read /api/version to decide what they may ask for, so the answer is the oldest
Ollama among the servable nodes: what any request may land on. A build without a version
stamp ("0.0.0", taken to serve everything) and a version that does not parse say nothing
about what is missing, so they count only when no node says more. With no servable node
the oldest known node stands in (the fleet as it will be when it returns); with no node at
all, `BASELINE`: the first Ollama that serves every path of Herd's own core (Ollama's and
OpenAI's chat, completions and embeddings), the least a client can expect of a Herd fleet.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.endpoints import DEV_BUILD, OllamaVersion, parse_version, since
from shared.models import NodeState

__all__ = ["BASELINE", "fleet_version"]

_CORE = ("/api/chat", "/api/generate", "/api/embed", "/api/tags", "/api/ps",
         "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")


def _baseline() -> OllamaVersion:
    firsts = [since(path) for path in _CORE]
    return max(first for first in firsts if first is not None)


BASELINE = _baseline()


def _oldest(versions: Iterable[str]) -> OllamaVersion | None:
    parsed: list[OllamaVersion] = []
    for text in versions:
        try:
            parsed.append(parse_version(text))
        except ValueError:
            continue
    stamped = [v for v in parsed if (v.major, v.minor, v.patch) != (0, 0, 0)]
    if stamped:
        return min(stamped)
    return DEV_BUILD if parsed else None


def fleet_version(nodes: Iterable[NodeState]) -> str:
    """The Ollama version /api/version answers for these nodes (see the module's doc)."""
    known = list(nodes)
    found = _oldest(n.ollama_version for n in known if n.servable) or _oldest(
        n.ollama_version for n in known)
    return str(found or BASELINE)
