"""Every chat-like API as Ollama's chat handler sees it: one request shape, checked against
the model, planned into a Job (thinking, tool call, structured output) and rendered.

Ollama translates /v1/chat/completions, /v1/responses, /v1/messages and
/v1/audio/transcriptions into its own chat request; the simulator does the same, so the
checks, the error wording and the token counts are the same on every path.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any

from services.sim.catalogue import ModelSpec
from services.sim.engine import Engine, SimError
from services.sim.infer import Job, ToolCall, job_options
from services.sim.schemagen import generate
from services.sim.text import render_chat, seeded_rng

__all__ = ["ChatRequest", "full_name", "parse_format", "plan_chat", "structured_value",
           "think_level"]

_LEVELS = ("high", "medium", "low", "max")
_ID_CHARS = string.ascii_lowercase + string.digits


@dataclass
class ChatRequest:
    """Ollama's chat request: what every compatible API is translated into."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)  # [{"type", "function"}]
    format: Any = None  # "json", a JSON Schema, or nothing
    think: Any = None  # true / false / "low" / "medium" / "high" / "max"
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: Any = None
    relax_thinking: bool = False  # the Anthropic path: no thinking instead of an error
    fixed: str | None = None  # the reply's text, fixed (a transcription)
    max_tokens: int | None = None  # a ceiling on the reply's natural length


def full_name(name: str) -> str:
    """The name as Ollama's errors print it: registry.ollama.ai/library/llama3.2:3b."""
    slashes = name.count("/")
    if slashes == 0:
        return f"registry.ollama.ai/library/{name}"
    return f"registry.ollama.ai/{name}" if slashes == 1 else name


def think_level(value: Any, spec: ModelSpec, asked: str, relax: bool = False) -> str | None:
    """The thinking a request asks for ("low" ... "max"), None for none; 400 as Ollama's
    when the value is invalid or the model cannot think (unless relaxed)."""
    if value is None or value is False:
        return None
    if value is True:
        level = "medium"
    elif isinstance(value, str) and value in _LEVELS:
        level = value
    elif isinstance(value, str):
        raise SimError(400, f"invalid think value: {json.dumps(value)} (must be \"high\", "
                            "\"medium\", \"low\", \"max\", true, or false)")
    else:
        raise SimError(400, "think must be a boolean or string (\"high\", \"medium\", \"low\", "
                            "\"max\", true, or false)")
    if "thinking" not in spec.capabilities:
        if relax:
            return None
        raise SimError(400, f"{json.dumps(asked)} does not support thinking")
    return level


def parse_format(value: Any) -> tuple[bool, Any]:
    """(plain JSON wanted, JSON Schema or None) from Ollama's `format`."""
    if value is None or value == "":
        return False, None
    if value == "json":
        return True, None
    if isinstance(value, dict):
        return False, value
    raw = json.dumps(json.dumps(value, separators=(",", ":")))
    # Ollama finds out when the runner gets the request: a 500, not a 400.
    raise SimError(500, f'invalid format: {raw}; expected "json" or a valid JSON Schema object')


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise SimError(400, "messages must be a list of objects")
    return value


def _answered(messages: list[dict[str, Any]]) -> bool:
    """Whether a tool result came back after the model's last turn (then it answers)."""
    for message in reversed(messages):
        role = str(message.get("role", "")).lower()
        if role == "tool":
            return True
        if role == "assistant":
            return False
    return False


def _plan_call(tools: list[dict[str, Any]], seed: int, name: str, prompt: str) -> ToolCall | None:
    functions = [t["function"] for t in tools if isinstance(t, dict)
                 and isinstance(t.get("function"), dict) and t["function"].get("name")]
    if not functions:
        return None
    rng = seeded_rng("tool", seed, name, prompt)
    chosen = rng.choice(functions)
    params = chosen.get("parameters")
    arguments = generate(params if isinstance(params, dict) else {}, rng, top=True)
    ident = "call_" + "".join(rng.choice(_ID_CHARS) for _ in range(8))
    return ToolCall(ident, str(chosen["name"]), arguments if isinstance(arguments, dict) else {})


def plan_chat(engine: Engine, req: ChatRequest, slow: float = 1.0) -> Job:
    """The Job for a chat request, or the SimError Ollama would answer."""
    spec = engine.model(req.model)
    if spec.embedding:
        raise SimError(400, f"{json.dumps(req.model)} does not support chat")
    messages = _messages(req.messages)
    tools = req.tools or []
    if not isinstance(tools, list):
        raise SimError(400, "tools must be a list")
    if tools and "tools" not in spec.capabilities:
        raise SimError(400, f"{full_name(spec.name)} does not support tools")
    think = think_level(req.think, spec, req.model, req.relax_thinking)
    json_format, schema = parse_format(req.format)
    opts = job_options(engine, {"options": req.options, "keep_alive": req.keep_alive})
    system = None if any(m.get("role") == "system" for m in messages) else spec.system
    prompt = render_chat(messages, system, tools)
    seed = opts["seed"] if opts["seed"] is not None else engine.config.seed
    job = Job(spec, prompt, opts["num_ctx"], opts["keep_alive"], opts["num_predict"],
              opts["stop"], seed, json_format=json_format, slow=slow, think=think,
              schema=schema, fixed=req.fixed, max_tokens=req.max_tokens)
    if tools and not _answered(messages):
        job.tool_call = _plan_call(tools, seed, spec.name, prompt)
    if schema is not None:
        job.structured = structured_value(schema, seed, spec.name, prompt)
    return job


def structured_value(schema: Any, seed: int, name: str, prompt: str) -> Any:
    """The JSON value a reply constrained by `schema` holds: seeded like the text."""
    return generate(schema, seeded_rng("json", seed, name, prompt), top=True)
