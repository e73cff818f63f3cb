"""Which Ollama version first serves each API path: one table, and a version comparator.

The router asks `serves(node_version, path)` to decide which nodes may get a request; the
simulator registers a route only when its `--ollama-version` serves it. The first versions
were read from Ollama's source: the first release tag (not a pre-release) whose
server/routes.go registers the path, with nothing removed later; `/v1/audio/speech`, newer
than the source read (0.33), comes from Ollama's changelog.

    >>> serves("0.13.3", "/v1/responses"), serves("0.13.2", "/v1/responses")
    (True, False)
    >>> serves("0.20.0", "/api/blobs/sha256:abc"), since("/v1/messages/count_tokens") is None
    (True, True)

Versions compare like semantic versions: a pre-release sorts before its release, so
"0.14.0-rc0" does not serve what "0.14.0" introduced (some release candidates lack it:
0.13.3-rc0 and -rc1 have no /v1/responses). "0.0.0" is what an Ollama built from source
without a version stamp reports (with or without a suffix); it is taken to serve everything
Ollama serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

__all__ = [
    "DEV_BUILD",
    "ENDPOINTS",
    "Endpoint",
    "OllamaVersion",
    "endpoint_for",
    "parse_version",
    "serves",
    "since",
]

_VERSION_RE = re.compile(
    r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:-([0-9A-Za-z.\-]+))?(?:\+[0-9A-Za-z.\-]+)?$")


@total_ordering
@dataclass(frozen=True)
class OllamaVersion:
    """An Ollama version such as 0.14.0 or 0.14.0-rc1, ordered like a semantic version."""

    major: int
    minor: int
    patch: int
    pre: str = ""  # "rc1"; empty for a release

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; pre-release parts compare numerically
        # where they are numbers, so rc10 comes after rc9.
        parts = tuple((0, int(p)) if p.isdigit() else (1, p)
                      for p in re.findall(r"\d+|[^\d.\-]+", self.pre))
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, parts)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OllamaVersion):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{self.pre}" if self.pre else text


DEV_BUILD = OllamaVersion(0, 0, 0)


def parse_version(text: str | OllamaVersion) -> OllamaVersion:
    """"0.14.0", "v0.14.0", "0.14.0-rc1", "0.6.8-rocm" -> OllamaVersion; ValueError else."""
    if isinstance(text, OllamaVersion):
        return text
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not an Ollama version: {text!r}")
    major, minor, patch, pre = match.groups()
    return OllamaVersion(int(major), int(minor), int(patch or 0), pre or "")


@dataclass(frozen=True)
class Endpoint:
    """One API path and the first Ollama release that serves it (None: none does)."""

    path: str  # as routed, with {parameters}: "/api/blobs/{digest}"
    first: OllamaVersion | None
    note: str = ""

    def served_by(self, version: str | OllamaVersion) -> bool:
        if self.first is None:
            return False
        found = parse_version(version)
        # 0.0.0 with any suffix is a build from source, not a release (fleet/versions.py)
        return (found.major, found.minor, found.patch) == (0, 0, 0) or found >= self.first


def _e(path: str, first: str | None, note: str = "") -> Endpoint:
    return Endpoint(path, parse_version(first) if first else None, note)


ENDPOINTS: tuple[Endpoint, ...] = (
    _e("/", "0.0.1"),
    _e("/api/generate", "0.0.1"),
    _e("/api/pull", "0.0.5"),
    _e("/api/push", "0.0.6"),
    _e("/api/create", "0.0.6"),
    _e("/api/tags", "0.0.6"),
    _e("/api/delete", "0.0.11"),
    _e("/api/copy", "0.0.12"),
    _e("/api/embeddings", "0.0.14"),
    _e("/api/show", "0.0.18"),
    _e("/api/blobs/{digest}", "0.1.10", "HEAD and POST"),
    _e("/api/chat", "0.1.14"),
    _e("/api/version", "0.1.14"),
    _e("/v1/chat/completions", "0.1.24"),
    _e("/api/ps", "0.1.38"),
    _e("/v1/completions", "0.2.0"),
    _e("/v1/models", "0.2.0"),
    _e("/v1/models/{model}", "0.2.0"),
    _e("/api/embed", "0.2.6"),
    _e("/v1/embeddings", "0.2.6"),
    _e("/v1/responses", "0.13.3", "stateless: no previous_response_id, no stored responses"),
    _e("/v1/messages", "0.14.0", "Anthropic Messages"),
    _e("/v1/audio/transcriptions", "0.20.0", "multipart form"),
    _e("/v1/messages/count_tokens", None, "Ollama has no token counting endpoint"),
    # From Ollama's changelog: later than the newest source read for this table (0.33).
    _e("/v1/audio/speech", "0.40.8", "from the changelog"),
)

_EXACT = {e.path: e for e in ENDPOINTS if "{" not in e.path}
_PREFIXED = [(e.path.split("{", 1)[0], e) for e in ENDPOINTS if "{" in e.path]


def endpoint_for(path: str) -> Endpoint | None:
    """The table row a request path falls under ("/v1/models/qwen3:8b" -> /v1/models/{model})."""
    found = _EXACT.get(path)
    if found is not None:
        return found
    for prefix, endpoint in _PREFIXED:
        if path.startswith(prefix) and len(path) > len(prefix):
            return endpoint
    return None


def since(path: str) -> OllamaVersion | None:
    """The first Ollama version serving `path`; None if none does or the path is unknown."""
    endpoint = endpoint_for(path)
    return endpoint.first if endpoint is not None else None


def serves(version: str | OllamaVersion, path: str) -> bool:
    """Whether an Ollama of `version` serves `path` (False for paths not in the table)."""
    endpoint = endpoint_for(path)
    return endpoint is not None and endpoint.served_by(version)
