"""The router's answers as msgspec structs: one contract for the router, its OpenAPI document
and the dashboard.

The fleet layer builds these, the API layer returns them (Litestar describes them in
`/schema/openapi.json`), and `streamlit_app/data.py` decodes the same classes, so a field
renamed here is renamed for all three at once. The JSON shapes are the ones ollama-herd's
users rely on (COMPAT.md): field names and nesting are part of the contract. The module
lives in `shared/` because both the router's fleet layer and the dashboard import it, and
the fleet layer may not import the API layer.

Inference bodies (`/api/chat`, `/v1/chat/completions`, ...) are described loosely at the
end: the router forwards them to the node unchanged, so their schemas name what routing
reads and allow everything else.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.health import Finding, Severity
from shared.models import NodeStatus, Trace, TraceStatus

__all__ = [
    "AnthropicErrorAnswer",
    "AnthropicMessagesRequest",
    "AppsReport",
    "BenchmarkList",
    "BenchmarkRun",
    "BenchmarkStart",
    "BenchmarkStored",
    "ChatRequest",
    "CopyRequest",
    "CountTokensAnswer",
    "CpuView",
    "CreateRequest",
    "DeleteAnswer",
    "DeleteRequest",
    "DiskView",
    "EmbedRequest",
    "EmbeddingsRequest",
    "ErrorAnswer",
    "Figures",
    "Finding",
    "FleetEvent",
    "FleetQueue",
    "FleetStatus",
    "FleetSummary",
    "GenerateRequest",
    "HealthReport",
    "HealthzError",
    "HealthzOk",
    "HeartbeatAnswer",
    "HourPoint",
    "InstalledModel",
    "KeyCreated",
    "KeyInfo",
    "KeyList",
    "KeyRevoked",
    "LoadedModelView",
    "MemoryView",
    "ModelAdvice",
    "ModelManagement",
    "ModelStats",
    "ModelsReport",
    "NodeAdvice",
    "NodeModelUsage",
    "NodeModels",
    "NodeView",
    "OpenAIChatRequest",
    "OpenAICompletionRequest",
    "OpenAIEmbeddingsRequest",
    "OpenAIError",
    "OpenAIErrorAnswer",
    "OpenAIModel",
    "OpenAIModelList",
    "Percentiles",
    "PinChange",
    "PinRequest",
    "PinView",
    "PinsListing",
    "PsList",
    "PsModel",
    "PullProgress",
    "PullRequest",
    "PushRequest",
    "QueueCounters",
    "Recommendations",
    "ResponsesRequest",
    "SettingView",
    "SettingsListing",
    "SettingsUpdate",
    "Severity",
    "SpeechRequest",
    "TagModel",
    "TagsList",
    "Trace",
    "TraceList",
    "TraceStatus",
    "TranscriptionForm",
    "TrendsReport",
    "UsageReport",
    "UsageSummary",
    "VersionAnswer",
    "Vitals",
]


class _Answer(msgspec.Struct, kw_only=True):
    """Base of every answer: keyword-only fields, so subclasses may add required ones."""


# --- errors (shared/errors.py renders them) --------------------------------------------


class ErrorAnswer(_Answer, kw_only=True):
    """Ollama's error shape, used on every path outside /v1/."""

    error: str


class OpenAIError(_Answer, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorAnswer(_Answer, kw_only=True):
    """OpenAI's error object, used on /v1/*."""

    error: OpenAIError


# --- the router's own small endpoints -------------------------------------------------


class VersionAnswer(_Answer, kw_only=True):
    version: str


class HealthzOk(_Answer, kw_only=True):
    status: Literal["ok"] = "ok"
    version: str
    replica: str


class HealthzError(_Answer, kw_only=True):
    status: Literal["error"] = "error"
    redis: str


class HeartbeatAnswer(_Answer, kw_only=True):
    """What a node agent gets back for a heartbeat (COMPAT.md)."""

    status: Literal["ok"] = "ok"
    node_status: NodeStatus


# --- fleet ------------------------------------------------------------------------------


class QueueCounters(_Answer, kw_only=True):
    """One node:model's slot counters, as the request path keeps them."""

    pending: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    max_concurrent: int = 0


class CpuView(_Answer, kw_only=True):
    utilization_pct: float = 0.0
    cores_physical: int = 0


class MemoryView(_Answer, kw_only=True):
    total_gb: float = 0.0
    used_gb: float = 0.0
    available_gb: float = 0.0
    pressure: str = "normal"


class DiskView(_Answer, kw_only=True):
    total_gb: float = 0.0
    available_gb: float = 0.0


class LoadedModelView(_Answer, kw_only=True):
    name: str
    size_gb: float = 0.0
    context_length: int = 0
    requests_active: int = 0
    expires_at: str = ""


class NodeView(_Answer, kw_only=True):
    """One node as /fleet/status shows it (ollama-herd's groups: cpu, memory, disk)."""

    node_id: str
    status: NodeStatus
    servable: bool
    ollama_url: str
    ollama_up: bool
    ollama_error: str = ""
    draining: bool = False
    last_seen: float = 0.0
    seconds_since_heartbeat: float = 0.0
    router_failures: int = 0
    cpu: CpuView = msgspec.field(default_factory=CpuView)
    memory: MemoryView = msgspec.field(default_factory=MemoryView)
    disk: DiskView = msgspec.field(default_factory=DiskView)
    gpu: dict[str, float] | None = None
    models_loaded: list[LoadedModelView] = msgspec.field(default_factory=list)
    models_available: list[str] = msgspec.field(default_factory=list)
    num_parallel: int = 0
    num_parallel_reported: int = 0
    max_loaded_models: int = 0
    ollama_version: str = ""
    agent_version: str = ""
    lan_ip: str = ""


class FleetSummary(_Answer, kw_only=True):
    nodes_total: int = 0
    nodes_online: int = 0
    nodes_degraded: int = 0
    nodes_offline: int = 0
    nodes_servable: int = 0
    models_loaded: int = 0
    requests_active: int = 0
    requests_waiting: int = 0


class FleetStatus(_Answer, kw_only=True):
    """GET /fleet/status; `queues` is keyed "node:model". `herd_version` is the router's
    own version; `ollama_version` what /api/version answers (the oldest Ollama among the
    servable nodes)."""

    fleet: FleetSummary
    nodes: list[NodeView]
    queues: dict[str, QueueCounters]
    timestamp: float
    herd_version: str = ""
    ollama_version: str = ""


class FleetEvent(_Answer, kw_only=True):
    """The data of a `fleet` message of GET /dashboard/events: /fleet/status, and why it was
    sent (`initial`, `periodic`, `node_status`, `models_loaded`), with the waiting requests
    per model."""

    reason: str
    fleet: FleetSummary
    nodes: list[NodeView]
    queues: dict[str, QueueCounters]
    waiting: dict[str, int]
    timestamp: float


class FleetQueue(_Answer, kw_only=True):
    """GET /fleet/queue: counters per "node:model", and waiting requests per model; the fair
    queue's view per model and app, and per app summed over models (docs/queueing.md)."""

    queues: dict[str, QueueCounters]
    waiting: dict[str, int]
    waiting_total: int
    waiting_by_app: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    waiting_apps: dict[str, int] = msgspec.field(default_factory=dict)
    timestamp: float


# --- health and recommendations ---------------------------------------------------------


class Vitals(_Answer, kw_only=True):
    nodes_total: int = 0
    nodes_online: int = 0
    nodes_degraded: int = 0
    nodes_offline: int = 0
    overall_error_rate_pct: float = 0.0
    cold_loads_24h: int = 0
    avg_ttft_ms: float = 0.0
    total_requests_24h: int = 0
    total_retries_24h: int = 0
    health_score: int = 100


class HealthReport(_Answer, kw_only=True):
    """GET /dashboard/api/health: vitals, and findings sorted critical first."""

    vitals: Vitals
    recommendations: list[Finding]
    checked_at: float


class ModelAdvice(_Answer, kw_only=True):
    """Keep a loaded model, load one in demand, or remove one nobody asks for."""

    action: Literal["keep", "load", "remove"]
    model: str
    reason: str
    requests_24h: int = 0
    cold_loads_24h: int = 0
    size_gb: float = 0.0


class NodeAdvice(_Answer, kw_only=True):
    node_id: str
    status: NodeStatus
    memory_available_gb: float = 0.0
    memory_total_gb: float = 0.0
    recommendations: list[ModelAdvice] = msgspec.field(default_factory=list)


class Recommendations(_Answer, kw_only=True):
    """GET /dashboard/api/recommendations: advice per servable node."""

    nodes: list[NodeAdvice]
    model_demand_24h: dict[str, int]
    generated_at: float


# --- usage ------------------------------------------------------------------------------


class TraceList(_Answer, kw_only=True):
    """GET /dashboard/api/traces: the newest traces first."""

    traces: list[Trace]
    count: int


class UsageSummary(_Answer, kw_only=True):
    """Counters and latencies of one scope (fleet, model, node, node:model, tag)."""

    requests: int = 0
    errors: int = 0
    rejected: int = 0
    error_rate_pct: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    cold_loads: int = 0
    context_reloads: int = 0  # of the cold loads, reloads of a copy already loaded
    client_disconnects: int = 0
    incomplete: int = 0
    timeouts: int = 0
    # Of `rejected`, the requests refused before their body was read or routed: no valid
    # credential (401), a forbidden one (403), the key's app over its limit (429).
    unauthorized: int = 0
    forbidden: int = 0
    rate_limited: int = 0
    avg_latency_ms: float = 0.0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    p99_latency_ms: float = 0.0
    avg_ttft_ms: float = 0.0
    avg_queue_wait_ms: float = 0.0


class NodeModelUsage(UsageSummary, kw_only=True):
    node_id: str
    model: str


class UsageReport(_Answer, kw_only=True):
    """GET /dashboard/api/usage; requests rejected before routing have no node."""

    window_hours: int
    fleet: UsageSummary
    rejected_before_routing: int
    models: dict[str, UsageSummary]
    nodes: dict[str, UsageSummary]
    node_models: list[NodeModelUsage]


class AppsReport(_Answer, kw_only=True):
    """GET /dashboard/api/apps: usage per tag."""

    window_hours: int
    apps: dict[str, UsageSummary]


class HourPoint(_Answer, kw_only=True):
    hour: int  # epoch seconds of the hour's start
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    cold_loads: int = 0
    avg_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    avg_ttft_ms: float = 0.0


class TrendsReport(_Answer, kw_only=True):
    """GET /dashboard/api/trends: one point per hour, oldest first."""

    window_hours: int
    model: str | None
    tag: str | None
    hours: list[HourPoint]


class ModelStats(UsageSummary, kw_only=True):
    model: str
    requests_per_hour: float = 0.0
    avg_load_ms: float = 0.0
    loaded_on: list[str] = msgspec.field(default_factory=list)
    installed_on: list[str] = msgspec.field(default_factory=list)
    requests_by_node: dict[str, int] = msgspec.field(default_factory=dict)


class ModelsReport(_Answer, kw_only=True):
    """GET /dashboard/api/models: per model its demand, latency and where it is."""

    window_hours: int
    models: list[ModelStats]


# --- model management -------------------------------------------------------------------


class InstalledModel(_Answer, kw_only=True):
    name: str
    size_gb: float = 0.0
    loaded: bool = False


class NodeModels(_Answer, kw_only=True):
    node_id: str
    status: NodeStatus
    servable: bool
    memory_total_gb: float = 0.0
    memory_available_gb: float = 0.0
    disk_available_gb: float = 0.0
    installed: list[InstalledModel] = msgspec.field(default_factory=list)
    loaded: list[LoadedModelView] = msgspec.field(default_factory=list)


class ModelManagement(_Answer, kw_only=True):
    """GET /dashboard/api/model-management; `models` maps a model to the nodes holding it."""

    nodes: list[NodeModels]
    models: dict[str, list[str]]


class PinView(_Answer, kw_only=True):
    """One pin and its state as the leader last reconciled it: `satisfied` (the copies
    are loaded), `loading` (a load is under way) or `short`, with the reason (no node has
    room, model missing, node offline)."""

    model: str
    copies: int
    nodes: list[str] = msgspec.field(default_factory=list)  # empty: any node
    state: Literal["satisfied", "loading", "short"]
    reason: str = ""
    loaded_on: list[str] = msgspec.field(default_factory=list)
    loading_on: list[str] = msgspec.field(default_factory=list)


class PinsListing(_Answer, kw_only=True):
    """GET /fleet/pins: every pin, and whether copies follow the queue."""

    pins: list[PinView]
    queue_copies: bool
    timestamp: float


class PinRequest(_Answer, kw_only=True):
    """POST /fleet/pins: keep `model` loaded on `copies` nodes (1 by default; with
    `nodes`, as many as named unless `copies` says fewer), only on `nodes` if given."""

    model: str
    copies: int | None = None
    nodes: list[str] | None = None


class PinChange(_Answer, kw_only=True):
    """The answer to POST and DELETE /fleet/pins: the pin as stored (or removed) and
    every pin now."""

    model: str
    copies: int = 0
    nodes: list[str] = msgspec.field(default_factory=list)
    removed: bool = False
    pins: list[PinView] = msgspec.field(default_factory=list)


class PullRequest(_Answer, kw_only=True):
    """POST /api/pull and /dashboard/api/pull; without `node_id` the roomiest node gets it.

    Other fields (`insecure`, `stream`) are passed to the node's Ollama.
    """

    model: str | None = None
    name: str | None = None
    node_id: str | None = None
    stream: bool = True
    insecure: bool = False


class PullProgress(_Answer, kw_only=True):
    """One line of a pull's progress as Ollama streams it (NDJSON), or an error line."""

    status: str | None = None
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    error: str | None = None


class DeleteRequest(_Answer, kw_only=True):
    """DELETE /api/delete: forwarded as sent to every node that has the model (`name` is
    Ollama's older spelling of `model`)."""

    model: str | None = None
    name: str | None = None


class CopyRequest(_Answer, kw_only=True):
    """POST /api/copy: forwarded as sent to every node that has `source`."""

    source: str
    destination: str


class CreateRequest(_Answer, kw_only=True):
    """POST /api/create: forwarded as sent to one node (X-Herd-Node, else the node its
    blobs were uploaded to, else the roomiest). `files` and `adapters` map file names to
    blob digests uploaded with POST /api/blobs/{digest}; other fields reach the node too."""

    model: str | None = None
    name: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None
    stream: bool = True


class PushRequest(_Answer, kw_only=True):
    """POST /api/push: run on a node that has the model (X-Herd-Node to name one)."""

    model: str | None = None
    name: str | None = None
    insecure: bool = False
    stream: bool = True


class DeleteAnswer(_Answer, kw_only=True):
    status: Literal["deleted"] = "deleted"
    model: str
    node_id: str


# --- settings ---------------------------------------------------------------------------


class SettingView(_Answer, kw_only=True):
    """One runtime setting: its value here, its default, help and allowed choices."""

    name: str
    value: Any
    default: Any
    type: str
    help: str
    choices: list[str] = msgspec.field(default_factory=list)


class SettingsListing(_Answer, kw_only=True):
    settings: list[SettingView]


class SettingsUpdate(SettingsListing, kw_only=True):
    """POST /dashboard/api/settings: what changed, and every setting after the change."""

    updated: dict[str, Any]


# --- client keys ------------------------------------------------------------------------


class KeyInfo(_Answer, kw_only=True):
    """A client key as listed: never its secret."""

    app: str
    requests_per_minute: int  # 0: no limit
    tokens_per_minute: int  # 0: no limit
    created: float  # epoch seconds
    last_used: float | None = None  # epoch seconds; None: never used


class KeyCreated(KeyInfo, kw_only=True):
    """POST /dashboard/api/keys: the only answer that carries the secret."""

    key: str


class KeyList(_Answer, kw_only=True):
    """GET /dashboard/api/keys: the keys, and who may run inference now."""

    keys: list[KeyInfo]
    # The client_auth setting as it applies: "keys" (a credential is needed: a key, the
    # client token or the admin token) or "open" (no key exists; only an admin sets it).
    client_auth: str = "open"
    # True when a request with no credential is served: client_auth is open and no
    # FLEET_CLIENT_TOKEN is set.
    inference_open: bool = True


class KeyRevoked(_Answer, kw_only=True):
    """DELETE /dashboard/api/keys/{app}."""

    app: str
    revoked: bool = True


# --- benchmarks -------------------------------------------------------------------------


class BenchmarkStart(_Answer, kw_only=True):
    """POST /dashboard/api/benchmarks; without `model`, the most loaded model is used."""

    model: str | None = None
    prompt: str | None = None
    requests: int = 20
    concurrency: int = 4
    max_tokens: int = 32
    prompt_tokens: int = 32
    stream: bool = False


class BenchmarkStored(_Answer, kw_only=True):
    """POST /dashboard/api/benchmarks/runs: a finished run kept beside the dashboard's own."""

    run_id: str
    stored: bool = True


class Percentiles(_Answer, kw_only=True):
    """Nearest-rank percentiles and the maximum, in milliseconds."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class Figures(_Answer, kw_only=True):
    """The figures of a set of benchmark requests (a whole run, one model, or one node)."""

    requests: int = 0  # answered successfully
    failed: int = 0
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0  # completion tokens of the set / wall time of the run
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: Percentiles = msgspec.field(default_factory=Percentiles)
    ttft_ms: Percentiles = msgspec.field(default_factory=Percentiles)
    cold_loads: int = 0


class BenchmarkRun(_Answer, kw_only=True):
    """One benchmark run (`herd bench` or the dashboard's), while it runs and once finished.

    The fields of the first version (run_id, status, model, requests, concurrency,
    max_tokens, done, failed, by_node, latency_ms p50/p95/max, tokens_per_s_avg ...) keep
    their names and meaning; the rest came with `herd bench`.
    """

    run_id: str
    model: str  # the first model (the field of the first version)
    status: Literal["running", "completed", "failed"] = "running"
    source: str = "dashboard"  # dashboard | cli
    models: list[str] = msgspec.field(default_factory=list)
    requests: int = 0  # planned; with a duration, the number sent once it ends
    duration_limit_s: float | None = None
    concurrency: int = 1
    prompt_tokens: int = 0
    max_tokens: int = 0
    stream: bool = False
    done: int = 0
    failed: int = 0
    by_node: dict[str, int] = msgspec.field(default_factory=dict)  # node -> answered
    started_at: float = 0.0
    updated_at: float = 0.0
    progress_pct: float = 0.0
    replica_id: str = ""
    finished_at: float | None = None
    duration_s: float | None = None
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    tokens_per_s_avg: float = 0.0  # mean generation speed of one request, by the node
    latency_ms: Percentiles = msgspec.field(default_factory=Percentiles)
    ttft_ms: Percentiles = msgspec.field(default_factory=Percentiles)
    cold_loads: int = 0
    per_model: dict[str, Figures] = msgspec.field(default_factory=dict)
    per_node: dict[str, Figures] = msgspec.field(default_factory=dict)
    error: str | None = None


class BenchmarkList(_Answer, kw_only=True):
    """GET /dashboard/api/benchmarks: runs in progress (any replica's) and the newest done."""

    active: list[BenchmarkRun]
    runs: list[BenchmarkRun]


# --- the catalogue in Ollama's and OpenAI's shapes --------------------------------------


class TagModel(_Answer, kw_only=True):
    """One model of /api/tags, as the nodes' Ollama lists it (fields it does not send: null)."""

    name: str
    model: str
    modified_at: str | None = None
    size: int = 0
    digest: str | None = None
    details: dict[str, Any] | None = None


class TagsList(_Answer, kw_only=True):
    """GET /api/tags: the union of the nodes' models, by name."""

    models: list[TagModel]


class PsModel(_Answer, kw_only=True):
    """One loaded copy of /api/ps, with the node it is on."""

    name: str
    model: str
    node_id: str
    size: int = 0
    size_vram: int | None = None
    digest: str | None = None
    details: dict[str, Any] | None = None
    expires_at: str | None = None
    context_length: int | None = None


class PsList(_Answer, kw_only=True):
    """GET /api/ps: every loaded copy on every node."""

    models: list[PsModel]


class OpenAIModel(_Answer, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "library"


class OpenAIModelList(_Answer, kw_only=True):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


# --- inference request bodies (forwarded unchanged; only what routing reads is named) ----


class _Forwarded(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A body the router forwards as sent: every other field reaches the node unchanged."""

    model: str
    stream: bool | None = None
    keep_alive: str | int | None = None
    options: dict[str, Any] | None = None
    fallback_models: list[str] | None = None  # Herd: models to try when `model` has no node
    metadata: dict[str, Any] | None = None  # Herd: `metadata.tags` tag the request


class ChatRequest(_Forwarded, kw_only=True):
    """POST /api/chat (Ollama)."""

    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None


class GenerateRequest(_Forwarded, kw_only=True):
    """POST /api/generate (Ollama); an empty prompt only loads the model."""

    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None
    format: str | dict[str, Any] | None = None


class EmbedRequest(_Forwarded, kw_only=True):
    """POST /api/embed (Ollama): one text or several."""

    input: str | list[str]
    truncate: bool | None = None


class EmbeddingsRequest(_Forwarded, kw_only=True):
    """POST /api/embeddings (Ollama's older embedding endpoint)."""

    prompt: str


class OpenAIChatRequest(_Forwarded, kw_only=True):
    """POST /v1/chat/completions (OpenAI)."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None


class OpenAICompletionRequest(_Forwarded, kw_only=True):
    """POST /v1/completions (OpenAI)."""

    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    user: str | None = None


class OpenAIEmbeddingsRequest(_Forwarded, kw_only=True):
    """POST /v1/embeddings (OpenAI)."""

    input: str | list[str]
    user: str | None = None


class ResponsesRequest(_Forwarded, kw_only=True):
    """POST /v1/responses (OpenAI Responses, stateless as Ollama serves it)."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    max_output_tokens: int | None = None
    reasoning: dict[str, Any] | None = None
    temperature: float | None = None


class AnthropicMessagesRequest(_Forwarded, kw_only=True):
    """POST /v1/messages (Anthropic Messages); /v1/messages/count_tokens takes the same
    body without max_tokens."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    thinking: dict[str, Any] | None = None
    temperature: float | None = None
    stop_sequences: list[str] | None = None


class SpeechRequest(_Forwarded, kw_only=True):
    """POST /v1/audio/speech (OpenAI): the answer is audio (audio/wav unless
    `response_format` asks otherwise), streamed as the node produces it."""

    input: str
    voice: str | None = None
    response_format: str | None = None


class TranscriptionForm(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """POST /v1/audio/transcriptions (OpenAI): a multipart form; `model` picks the nodes."""

    model: str
    file: str = msgspec.field(name="file")  # the audio, a file part
    language: str | None = None
    prompt: str | None = None
    response_format: str | None = None


class AnthropicError(_Answer, kw_only=True):
    type: str
    message: str


class AnthropicErrorAnswer(_Answer, kw_only=True):
    """Anthropic's error object, used on /v1/messages and /v1/messages/count_tokens."""

    type: str
    error: AnthropicError


class CountTokensAnswer(_Answer, kw_only=True):
    """POST /v1/messages/count_tokens: the input's token count (docs/api.md says how it is
    counted)."""

    input_tokens: int
