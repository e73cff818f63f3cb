"""The simulator's settings: one frozen object built from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.sim.catalogue import ModelSpec, parse_models

__all__ = ["DEFAULT_MODELS", "SimConfig"]

DEFAULT_MODELS = "llama3.2:3b,qwen3:8b,nomic-embed-text"


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the modelled node; defaults resemble a mid-range GPU box."""

    host: str = "127.0.0.1"
    port: int = 11434
    control_port: int = 0
    node_name: str = "sim"
    models: tuple[ModelSpec, ...] = field(
        default_factory=lambda: tuple(parse_models(DEFAULT_MODELS)))
    memory_gb: float = 24.0
    max_loaded_models: int = 3
    cpu_cores: int = 8
    disk_gb: float = 512.0
    num_parallel: int = 4
    default_num_ctx: int = 4096
    keep_alive: float = 300.0  # seconds; negative = forever, 0 = unload when idle
    load_seconds_per_gb: float = 0.5
    load_base_seconds: float = 0.2
    prompt_tps: float = 1500.0
    tokens_per_s: float = 40.0
    contention: float = 0.25
    response_tokens: tuple[int, int] = (24, 160)
    pull_seconds_per_gb: float = 8.0
    seed: int = 0
    version: str = "0.40.8"  # serves every endpoint in shared/endpoints.py Ollama has
    keep_bodies: int = 100
    fault: str = "none"
    fault_params: dict[str, Any] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return [spec.name for spec in self.models]
