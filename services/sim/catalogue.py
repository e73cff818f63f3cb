"""The models the simulator knows: sizes, families and context lengths of common models."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

__all__ = ["CATALOGUE", "ModelSpec", "normalize_name", "parse_models", "spec_for"]

GB = 1_000_000_000


@dataclass(frozen=True)
class ModelSpec:
    """One installed model, as /api/tags and /api/show describe it."""

    name: str  # always "base:tag"
    family: str
    parameter_size: str  # as Ollama prints it, e.g. "3.2B"
    quantization: str
    size: int  # bytes on disk (the weights)
    context_length: int  # the trained context length
    embedding_length: int
    embedding: bool = False
    capabilities: tuple[str, ...] = field(default=("completion",))
    system: str = ""  # the system prompt a created model carries
    manifest: str = ""  # the manifest digest, when not derived from the name (a copy)

    @property
    def params_b(self) -> float:
        text = self.parameter_size.upper()
        if text.endswith("M"):
            return float(text[:-1]) / 1000
        return float(text.rstrip("B"))

    @property
    def kv_bytes_per_token(self) -> int:
        # Grows slower than the parameter count (GQA keeps KV heads few): about 112 KiB
        # per token for a 3B model, 150 KiB for 8B, 290 KiB for 70B at f16.
        if self.embedding:
            return 4096
        return int(80 * 1024 * max(self.params_b, 0.1) ** 0.3)

    def memory_bytes(self, num_ctx: int, num_parallel: int) -> int:
        """What the model occupies when loaded: weights plus a KV cache per slot."""
        return self.size + self.kv_bytes_per_token * num_ctx * num_parallel

    @property
    def digest(self) -> str:
        return self.manifest or hashlib.sha256(self.name.encode()).hexdigest()

    def details(self) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


def _m(  # noqa: PLR0917 - one row of the table below
       name: str, family: str, psize: str, quant: str, size: int, ctx: int, emb: int,
       caps: tuple[str, ...] = ("completion", "tools")) -> ModelSpec:
    embedding = caps == ("embedding",)
    return ModelSpec(name, family, psize, quant, size, ctx, emb, embedding, caps)


_EMBED = ("embedding",)
_THINK = ("completion", "tools", "thinking")
_ENTRIES = (
    _m("llama3.2:3b", "llama", "3.2B", "Q4_K_M", 2_019_393_189, 131072, 3072),
    _m("llama3.2:1b", "llama", "1.2B", "Q8_0", 1_321_098_329, 131072, 2048),
    _m("llama3.1:8b", "llama", "8.0B", "Q4_K_M", 4_920_753_328, 131072, 4096),
    _m("llama3.1:70b", "llama", "70.6B", "Q4_K_M", 42_520_413_916, 131072, 8192),
    _m("llama3.3:70b", "llama", "70.6B", "Q4_K_M", 42_520_413_916, 131072, 8192),
    _m("qwen3:4b", "qwen3", "4.0B", "Q4_K_M", 2_497_293_918, 40960, 2560, _THINK),
    _m("qwen3:8b", "qwen3", "8.2B", "Q4_K_M", 5_225_388_164, 40960, 4096, _THINK),
    _m("qwen3:14b", "qwen3", "14.8B", "Q4_K_M", 9_276_198_565, 40960, 5120, _THINK),
    _m("qwen3:32b", "qwen3", "32.8B", "Q4_K_M", 20_201_253_588, 40960, 5120, _THINK),
    _m("qwen2.5:7b", "qwen2", "7.6B", "Q4_K_M", 4_683_087_332, 32768, 3584),
    _m("qwen2.5-coder:7b", "qwen2", "7.6B", "Q4_K_M", 4_683_087_519, 32768, 3584),
    _m("gemma3:1b", "gemma3", "999.89M", "Q4_K_M", 815_319_791, 32768, 1152, ("completion",)),
    _m("gemma3:4b", "gemma3", "4.3B", "Q4_K_M", 3_338_801_804, 131072, 2560, ("completion",)),
    _m("gemma3:12b", "gemma3", "12.2B", "Q4_K_M", 8_149_190_253, 131072, 3840, ("completion",)),
    _m("gemma3:27b", "gemma3", "27.4B", "Q4_K_M", 17_396_936_941, 131072, 5376, ("completion",)),
    _m("mistral:7b", "llama", "7.2B", "Q4_K_M", 4_113_301_824, 32768, 4096),
    _m("phi4:14b", "phi3", "14.7B", "Q4_K_M", 9_053_116_391, 16384, 5120, ("completion",)),
    _m("deepseek-r1:8b", "qwen3", "8.2B", "Q4_K_M", 5_225_376_047, 131072, 4096, _THINK),
    _m("gpt-oss:20b", "gptoss", "20.9B", "MXFP4", 13_780_173_734, 131072, 2880, _THINK),
    _m("nomic-embed-text:latest", "nomic-bert", "137M", "F16", 274_302_450, 2048, 768, _EMBED),
    _m("mxbai-embed-large:latest", "bert", "334M", "F16", 669_615_493, 512, 1024, _EMBED),
    _m("all-minilm:latest", "bert", "23M", "F16", 45_960_996, 256, 384, _EMBED),
)
# What ":latest" means for the models whose default tag is a size.
_LATEST = {
    "llama3.2": "llama3.2:3b", "llama3.1": "llama3.1:8b", "llama3.3": "llama3.3:70b",
    "qwen3": "qwen3:8b", "qwen2.5": "qwen2.5:7b", "qwen2.5-coder": "qwen2.5-coder:7b",
    "gemma3": "gemma3:4b", "mistral": "mistral:7b", "phi4": "phi4:14b",
    "deepseek-r1": "deepseek-r1:8b", "gpt-oss": "gpt-oss:20b",
}
CATALOGUE: dict[str, ModelSpec] = {spec.name: spec for spec in _ENTRIES}


def normalize_name(name: str) -> str:
    """A model name with its tag: "llama3.2" means "llama3.2:latest", as in Ollama."""
    name = name.strip()
    tail = name.rsplit("/", 1)[-1]
    return name if ":" in tail else f"{name}:latest"


_SIZE_TAG = re.compile(r"(?:^|[:\-_])(\d+(?:\.\d+)?)([bm])(?:$|[\-_])", re.IGNORECASE)


def _guess(name: str) -> ModelSpec:
    """A plausible spec for a name the catalogue lacks, sized from its ":Nb" tag."""
    base, _, tag = name.rpartition(":")
    match = _SIZE_TAG.search(tag) or _SIZE_TAG.search(base)
    embedding = "embed" in name.lower()
    if match:
        params_b = float(match.group(1)) / (1000 if match.group(2).lower() == "m" else 1)
    else:
        params_b = 0.3 if embedding else 4.0
    family = re.sub(r"[\d.:\-_]+$", "", base.rsplit("/", 1)[-1].split(":")[0]) or "llama"
    family = re.sub(r"[^a-z]", "", family.lower()) or "llama"
    psize = f"{params_b * 1000:.0f}M" if params_b < 1 else f"{params_b:.1f}B"
    if embedding:
        return ModelSpec(name, family, psize, "F16", int(params_b * 2 * GB), 8192, 768, True,
                         ("embedding",))
    # Q4_K_M weighs about 0.6 GB per billion parameters.
    size = int(params_b * 0.6 * GB) + 50_000_000
    emb = 256 * max(4, round(math.sqrt(params_b) * 6))
    thinks = any(k in name.lower() for k in ("qwen3", "deepseek-r1", "gpt-oss", "think"))
    return ModelSpec(name, family, psize, "Q4_K_M", size, 32768, emb, False,
                     _THINK if thinks else ("completion", "tools"))


def spec_for(name: str) -> ModelSpec:
    """The spec of a model by name (tag optional): from the catalogue, or guessed."""
    full = normalize_name(name)
    if full in CATALOGUE:
        return CATALOGUE[full]
    base, _, tag = full.rpartition(":")
    if tag == "latest" and base in _LATEST:
        real = CATALOGUE[_LATEST[base]]
        return ModelSpec(full, real.family, real.parameter_size, real.quantization, real.size,
                         real.context_length, real.embedding_length, real.embedding,
                         real.capabilities)
    return _guess(full)


def parse_models(text: str) -> list[ModelSpec]:
    """`llama3.2:3b,qwen3:8b,nomic-embed-text` -> specs, in order, without duplicates."""
    specs: dict[str, ModelSpec] = {}
    for part in text.split(","):
        if part.strip():
            spec = spec_for(part)
            specs.setdefault(spec.name, spec)
    return list(specs.values())
