"""A seeded chat workload for the scheduling benchmark: the same seed gives the same requests.

Conversations arrive as a Poisson process whose rate jumps by `burst_factor` for
`burst_seconds` every `burst_every` seconds. Each picks a model from a weighted mix, opens
with a short question or a long document, and may go on for more turns: a later turn is
sent `think` seconds after the previous reply arrived and resends the whole history, the
reply included (the replayer fills in the replies), as a chat client does. Reply lengths
are fixed per turn (`num_predict`), so every policy is asked for exactly the same work.
Times are wall-clock seconds of the (sped-up) simulated fleet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MIX", "Conversation", "Turn", "WorkloadSpec", "generate", "summary"]

DEFAULT_MIX: dict[str, float] = {
    "llama3.2:3b": 0.35, "qwen3:8b": 0.30, "qwen3:14b": 0.20, "qwen3:32b": 0.15,
}

_SYLLABLES = ("ka", "lo", "mi", "ren", "tas", "vo", "pel", "dun", "sho", "ri", "gan", "fe",
              "mor", "bi", "zu", "lan", "tok", "ve", "sim", "ar")
_SYSTEMS = (
    "You are a helpful assistant. Answer briefly.",
    "You are a senior engineer reviewing code. Be precise.",
    "You summarise documents for busy readers.",
    "You are a friendly tutor. Explain step by step.",
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message and the reply length asked for it."""

    text: str
    max_tokens: int
    think: float  # seconds after the previous reply before this turn is sent (0 for the first)


@dataclass(frozen=True, slots=True)
class Conversation:
    conv_id: int
    start: float  # seconds after the workload starts
    model: str
    system: str
    turns: tuple[Turn, ...]

    @property
    def prompt_words(self) -> int:
        return sum(len(t.text.split()) for t in self.turns)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Everything the generator draws from; with the seed, it fixes the workload."""

    seed: int = 1
    duration: float = 20.0  # conversations start within this many seconds
    rate: float = 2.0  # conversations per second outside bursts
    burst_every: float = 8.0
    burst_seconds: float = 2.0
    burst_factor: float = 3.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    multi_turn_share: float = 0.5  # conversations with more than one turn
    max_turns: int = 4
    long_share: float = 0.25  # conversations opening with a long document
    short_words: tuple[int, int] = (8, 60)
    long_words: tuple[int, int] = (600, 1200)
    reply_tokens: tuple[int, int] = (16, 120)
    think: tuple[float, float] = (0.5, 2.0)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))


def _text(rng: random.Random, words: int) -> str:
    out: list[str] = []
    for i in range(words):
        out.append(_word(rng))
        if i % 12 == 11:
            out[-1] += "."
    return " ".join(out)


def _rate_at(spec: WorkloadSpec, t: float) -> float:
    in_burst = spec.burst_every > 0 and (t % spec.burst_every) < spec.burst_seconds
    return spec.rate * (spec.burst_factor if in_burst else 1.0)


def _arrivals(spec: WorkloadSpec, rng: random.Random) -> list[float]:
    """A Poisson process with a piecewise rate, by thinning against the peak rate."""
    peak = spec.rate * max(spec.burst_factor, 1.0)
    if peak <= 0:
        return []
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= spec.duration:
            return times
        if rng.random() * peak < _rate_at(spec, t):
            times.append(t)


def generate(spec: WorkloadSpec) -> list[Conversation]:
    """The conversations of `spec`, by start time. Pure: the same spec, the same list."""
    rng = random.Random(f"herd-workload:{spec.seed}")
    models = list(spec.mix)
    weights = [spec.mix[m] for m in models]
    conversations: list[Conversation] = []
    for conv_id, start in enumerate(_arrivals(spec, rng)):
        model = rng.choices(models, weights)[0]
        n_turns = rng.randint(2, spec.max_turns) if rng.random() < spec.multi_turn_share else 1
        long_first = rng.random() < spec.long_share
        turns: list[Turn] = []
        for i in range(n_turns):
            low, high = spec.long_words if (i == 0 and long_first) else spec.short_words
            think = 0.0 if i == 0 else rng.uniform(*spec.think)
            turns.append(Turn(_text(rng, rng.randint(low, high)),
                              rng.randint(*spec.reply_tokens), round(think, 3)))
        conversations.append(Conversation(conv_id, round(start, 4), model,
                                          rng.choice(_SYSTEMS), tuple(turns)))
    return conversations


def summary(conversations: list[Conversation]) -> dict[str, float]:
    """Counts that describe a workload: requests, per-model shares, tokens asked for."""
    requests = sum(len(c.turns) for c in conversations)
    out: dict[str, float] = {
        "conversations": len(conversations), "requests": requests,
        "reply_tokens": sum(t.max_tokens for c in conversations for t in c.turns),
        "multi_turn": sum(1 for c in conversations if len(c.turns) > 1),
    }
    for c in conversations:
        out[f"requests:{c.model}"] = out.get(f"requests:{c.model}", 0) + len(c.turns)
    return out
