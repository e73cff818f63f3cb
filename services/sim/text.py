"""Deterministic text: the tokenizer, the generated words, embeddings and durations."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

__all__ = [
    "TOKEN_JSON",
    "embedding",
    "embedding_base64",
    "generate_tokens",
    "parse_keep_alive",
    "pieces",
    "render_chat",
    "seeded_rng",
    "token_ids",
    "tokenize",
]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")

# Words and punctuation the simulated models say. Each entry is one token, so a reply's
# eval_count equals the number of tokens `tokenize` finds in its text.
_VOCABULARY = """
the a of to and in is it that for on with as was at by this be from are or an model
node fleet request token slot queue cache load memory prompt stream reply answer question
system user time data server client route fast slow small large first next last every
many some one two three four five six seven eight nine ten good better best simple
clear short long quiet busy ready new old open close light river mountain forest ocean
city garden window morning evening summer winter cloud bird stone bridge road house
tree flower rain snow wind fire water earth star moon think know see make take give
find tell ask work call try use keep run move help because while when where which
what how then there here also only just still even
"""
_WORDS = tuple(_VOCABULARY.split())
_PUNCT = (",", ".")
TOKEN_JSON: dict[str, bytes] = {}
for _w in _WORDS:
    for _t in (" " + _w, _w.capitalize(), " " + _w.capitalize()):
        TOKEN_JSON[_t] = msgspec.json.encode(_t)
for _p in _PUNCT:
    TOKEN_JSON[_p] = msgspec.json.encode(_p)


def tokenize(text: str) -> list[str]:
    """The simulator's tokenizer: words and single punctuation marks."""
    return _TOKEN_RE.findall(text)


def pieces(text: str) -> list[str]:
    """`text` cut into streamable chunks of exactly one token each (with the whitespace
    before it), so that the chunks join back into `text` and count as its tokens."""
    found: list[str] = _PIECE_RE.findall(text)
    tail = len(text) - sum(map(len, found))
    if tail and found:
        found[-1] += text[-tail:]
    return found


def token_ids(tokens: Sequence[str]) -> list[int]:
    return [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest()) % 128_000
            for t in tokens]


def seeded_rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest))


def generate_tokens(rng: random.Random) -> Iterator[str]:
    """An endless stream of sentence-like tokens drawn from rng."""
    first = True
    while True:
        length = rng.randint(5, 14)
        for i in range(length):
            word = rng.choice(_WORDS)
            if i == 0:
                word = word.capitalize()
            yield word if first else " " + word
            first = False
            if 0 < i < length - 2 and rng.random() < 0.08:
                yield ","
        yield "."


def render_chat(messages: Sequence[Any], system: str | None = None,
                tools: Sequence[Any] = ()) -> str:
    """A chat as one prompt, the way a chat template would lay it out: tools and tool
    calls as JSON, so that they cost prompt tokens as they would at a real model."""
    parts: list[str] = []
    if tools:
        listed = msgspec.json.encode(list(tools)).decode()
        system = f"{system}\n\nTools:\n{listed}" if system else f"Tools:\n{listed}"
    if system:
        parts.append(f"<|start|>system\n{system}<|end|>\n")
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        calls = message.get("tool_calls")
        if calls:
            content = f"{content or ''}{msgspec.json.encode(calls).decode()}"
        parts.append(f"<|start|>{message.get('role', 'user')}\n{content or ''}<|end|>\n")
    parts.append("<|start|>assistant\n")
    return "".join(parts)


def embedding(model: str, text: str, dim: int, seed: int) -> list[float]:
    """A unit vector that depends only on (model, text, seed)."""
    rng = seeded_rng("embed", model, text, seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def embedding_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: object, default: float) -> float:
    """Ollama's keep_alive (seconds as a number, or "5m", "1h30m", "-1") in seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        pieces = _DURATION_RE.findall(text)
        if pieces and "".join(n + u for n, u in pieces) == text.replace("+", ""):
            return sum(float(n) * _UNITS[u] for n, u in pieces)
    raise ValueError(f"invalid keep_alive {value!r}")
