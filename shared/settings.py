"""Herd's one settings object: built once from FLEET_* variables and CLI flags, then frozen."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.models import valid_model_name
from shared.pins import PinError, parse_pins

__all__ = [
    "RUNTIME_FIELDS",
    "Settings",
    "SettingsError",
    "coerce",
    "env_name",
    "field_default",
    "setting_fields",
]

ENV_PREFIX = "FLEET_"


class SettingsError(ValueError):
    """A setting has a value of the wrong type or outside its allowed choices."""


def _setting(
    default: Any,
    help: str,
    *,
    runtime: bool = False,
    choices: tuple[str, ...] = (),
    env: str | None = None,
) -> Any:
    """Declare a field: its default, help text, and whether it may change at run time."""
    metadata = {"help": help, "runtime": runtime, "choices": choices, "env": env}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob Herd has. Fields marked runtime can be changed through the settings API."""

    # --- the router process
    host: str = _setting("0.0.0.0", "Address the router listens on.")
    port: int = _setting(11435, "Port the router listens on.")
    workers: int = _setting(
        1, "Router processes serving the one port (SO_REUSEPORT), each a full replica. Only "
        "the first advertises over mDNS; one dashboard per host.",
    )
    redis_url: str = _setting(
        "",
        "Redis shared by all router replicas: redis://, rediss:// (TLS), unix://, "
        "redis+sentinel:// or redis+cluster:// (see the URL forms below). Empty: start an "
        "embedded Redis under the data dir.",
    )
    redis_timeout: float = _setting(
        2.0,
        "Seconds to wait for a Redis reply (and a connection) before giving up: every "
        "endpoint then answers (503 with Retry-After where it needs the fleet state) "
        "instead of hanging on a Redis that stopped answering.",
    )
    redis_prefix: str = _setting(
        "herd:", "Prefix of every Redis key and channel Herd uses. On a Redis Cluster it "
        "becomes every key's hash tag (herd: -> {herd}:), so all of them live in one slot.",
    )
    data_dir: str = _setting(
        "~/.fleet-manager", "Where latency.db, logs/ and the embedded redis/ live."
    )
    log_level: str = _setting(
        "INFO",
        "Lowest level written to the console and to the JSON log files.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    otel_endpoint: str = _setting(
        "", "OpenTelemetry collector (OTLP/HTTP, e.g. http://otel-collector:4318): set, every "
        "inference request is traced, its spans sent in batches to <endpoint>/v1/traces "
        "(needs the herd[otel] extra). The SDK's own OTEL_* variables apply too "
        "(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, "
        "OTEL_TRACES_SAMPLER, OTEL_BSP_*). Empty: no tracing, at no cost.",
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    mdns_enabled: bool = _setting(
        True, "Advertise the router (and browse, in herd-node) over mDNS. --no-mdns turns it off."
    )
    mdns_interfaces: tuple[str, ...] = _setting(
        (), "Comma list of addresses to use for mDNS; empty means every interface."
    )
    fleet_name: str = _setting(
        "", "Name of the fleet in mDNS: node agents join only routers advertising the same "
        "name (several fleets on one LAN).", env="FLEET_NAME",
    )
    dashboard_enabled: bool = _setting(
        True, "Start the Streamlit dashboard beside the router. --no-dashboard turns it off."
    )
    dashboard_port: int = _setting(8501, "Port of the Streamlit dashboard started by herd.")
    admin_token: str = _setting(
        "", "Bearer token required to change settings, pull/delete models, manage client keys "
        "and start benchmarks; also accepted as a client credential. Empty: those changes are "
        "accepted only from loopback clients."
    )
    client_token: str = _setting(
        "", "Bearer token accepted on inference requests, shared by every app; when set, "
        "inference always needs a credential. Empty: client_auth decides."
    )
    client_auth: str = _setting(
        "open",
        "Who may run inference: open (anyone; only while no client key exists) or keys (a "
        "client key, the client token or the admin token). Creating a key sets keys, and it "
        "stays keys when the last key is revoked: only an admin sets open again "
        "(herd keys open), once no key is left.",
        runtime=True,
        choices=("open", "keys"),
    )
    node_token: str = _setting(
        "", "Bearer token a node agent must send with its heartbeats. Empty: no check."
    )
    cors_origins: tuple[str, ...] = _setting(
        (), "Comma list of browser origins allowed to call the Ollama, OpenAI and Anthropic "
        "APIs (/, /api/*, /v1/*) from a web page: https://chat.example.com, * for any, or a "
        "pattern with * (http://localhost:*). Preflights are answered and answers carry "
        "the CORS headers. Empty: no CORS, so browsers refuse cross-origin calls (like "
        "OLLAMA_ORIGINS, with no origin allowed by default).",
    )

    # --- routing (runtime)
    max_retries: int = _setting(
        2, "Other nodes tried after a failure before the first byte reached the client.",
        runtime=True,
    )
    context_protection: str = _setting(
        "strip",
        "What to do with a num_ctx that would reload a loaded model: strip, warn or passthrough.",
        runtime=True,
        choices=("strip", "warn", "passthrough"),
    )
    default_num_ctx: int = _setting(
        4096,
        "Context length the nodes' Ollama gives a request without num_ctx (its "
        "OLLAMA_CONTEXT_LENGTH); context protection compares loaded copies with it.",
        runtime=True,
    )
    auto_pull: bool = _setting(
        False, "Pull a model onto the roomiest node when no node has it.", runtime=True
    )
    default_num_parallel: int = _setting(
        4, "Slots per node:model when the node does not report its parallelism.", runtime=True
    )
    max_queue_depth: int = _setting(
        200, "Requests that may wait fleet-wide per model before new ones get 503.", runtime=True
    )
    queue_timeout: float = _setting(
        300.0, "Seconds a request may wait for a slot before it gets 503.", runtime=True
    )
    lease_seconds: float = _setting(
        30.0, "Lifetime of a slot lease; renewed while a request runs.", runtime=True
    )
    stale_timeout: float = _setting(
        600.0, "Seconds without output after which a request is cancelled.", runtime=True
    )
    connect_timeout: float = _setting(
        5.0, "Seconds to wait for a node to accept a connection.", runtime=True
    )
    max_body_mb: float = _setting(
        64.0, "Largest request body accepted, in MiB; larger ones get 413.", runtime=True
    )
    weight_loaded: float = _setting(
        40.0, "Scorer weight: the model is already loaded on the node.", runtime=True
    )
    weight_memory: float = _setting(
        10.0, "Scorer weight: the model fits in the node's free memory.", runtime=True
    )
    weight_load: float = _setting(
        30.0, "Scorer weight: free slots and queued work relative to the node's slots.",
        runtime=True,
    )
    weight_latency: float = _setting(
        15.0, "Scorer weight: recent latency of the node for the model.", runtime=True
    )
    weight_context: float = _setting(
        10.0, "Scorer weight: the loaded context is large enough for the request.", runtime=True
    )
    weight_affinity: float = _setting(
        15.0, "Scorer weight: the node served this conversation's last turn (prompt cached).",
        runtime=True,
    )
    weight_failures: float = _setting(
        20.0, "Scorer weight: no recent failures the routers saw on the node.", runtime=True
    )
    routing_candidates: int = _setting(
        8, "Nodes a request considers when more than this many can serve its model: a "
        "shortlist (its conversation's node, then nodes with the model loaded and a free "
        "slot, taken in turn) is scored, and every node only when the shortlist is full. "
        "0: score every node.", runtime=True,
    )
    session_affinity: str = _setting(
        "fleet",
        "Where the node that took a conversation's last turn is remembered: fleet (in Redis, "
        "shared by every replica), replica (each replica's own memory) or off.",
        runtime=True,
        choices=("fleet", "replica", "off"),
    )
    affinity_ttl_seconds: float = _setting(
        1800.0, "Seconds a conversation is remembered after its last turn.", runtime=True
    )
    affinity_max_sessions: int = _setting(
        100_000, "Conversations remembered fleet-wide; the least recently used are forgotten.",
        runtime=True,
    )
    app_weights: dict[str, float] = _setting(  # noqa: RUF009 - a default_factory inside
        {},
        'Share of freed slots each app gets while apps wait, e.g. {"batch": 0.2} '
        "(JSON, or batch=0.2,chat=2); apps not named weigh 1.",
        runtime=True,
    )
    pinned_models: dict[str, dict[str, Any]] = _setting(  # noqa: RUF009 - a default_factory
        {},
        'Models the fleet keeps loaded: {"model": copies} or {"model": {"copies": n, '
        '"nodes": [...]}} (JSON, or model=copies,...). The leader loads missing copies '
        "where they fit (docs/pins.md); `herd pin` and /fleet/pins edit one entry.",
        runtime=True,
    )
    wait_for_loaded: bool = _setting(
        True,
        "The wait rule: a request waits for a slot on a loaded copy instead of taking a free "
        "slot that needs a cold load, while its expected wait there is shorter than the load "
        "(docs/routing.md).",
        runtime=True,
    )
    queue_copies: bool = _setting(
        True,
        "Copies that follow the queue: when a model's requests wait longer than a cold load "
        "of it takes and another node has room, the leader loads one more copy there; "
        "copies no longer needed go back to the node's keep_alive (docs/pins.md).",
        runtime=True,
    )

    model_aliases: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory inside
        {},
        'Model names clients ask for, mapped to fleet models before routing, on every API: '
        'a JSON object of names or globs, e.g. {"claude-*": "qwen3:32b", "gpt-4o-mini": '
        '"llama3.2:3b"}. An exact name wins over a glob; traces keep the asked name as '
        "original_model.",
        runtime=True,
    )

    # --- the node registry
    heartbeat_interval: float = _setting(5.0, "Seconds between a node agent's heartbeats.")
    heartbeat_timeout: float = _setting(
        15.0, "Seconds of heartbeat silence after which a node is degraded.", runtime=True
    )
    heartbeat_offline: float = _setting(
        30.0, "Seconds of heartbeat silence after which a node is offline.", runtime=True
    )
    node_failures_degraded: int = _setting(
        3, "Consecutive failures the routers see on a node before it is degraded (until a "
        "success or a heartbeat with Ollama up); the same count on one model of a node "
        "stops that model being sent there for model_failure_cooldown.", runtime=True,
    )
    model_failure_cooldown: float = _setting(
        30.0, "Seconds a model that failed node_failures_degraded times in a row on a node "
        "is not sent there (then one request tries it again). Failures of two models on "
        "one node within this time count against the node itself.", runtime=True,
    )

    # --- the node agent
    router_urls: tuple[str, ...] = _setting(
        (), "Routers a node agent posts to (comma list). Empty: find them over mDNS.",
        env="FLEET_ROUTER_URL",
    )
    node_ollama_host: str = _setting(
        "http://localhost:11434", "The Ollama a node agent reports on."
    )
    node_id: str = _setting("", "Name of this node. Empty: the host name.")
    num_parallel: int = _setting(
        0,
        "Parallel requests per model the node's Ollama runs. 0: OLLAMA_NUM_PARALLEL, "
        "else Ollama's default.",
    )
    node_memory_gb: float = _setting(
        0.0,
        "Memory (GB) a node agent reports as its total, e.g. the GPU's VRAM or a container's "
        "share of a host; used is then the size of the models its Ollama has loaded. "
        "0: the machine's memory.",
    )

    # --- health checks (thresholds; see docs/plugins.md for the checks that read them)
    health_window_hours: int = _setting(
        3, "Hours of statistics (hourly buckets, the current one included) the rate checks "
        "read; vitals always cover 24 h.", runtime=True,
    )
    health_min_requests: int = _setting(
        20, "Requests a node or the fleet must have served in the window before rate checks "
        "(errors, retries, disconnects, timeouts) judge it.", runtime=True,
    )
    health_error_rate_pct: float = _setting(
        5.0, "Error rate of a node (failed attempts / attempts, %) that raises a warning; "
        "four times it is critical.", runtime=True,
    )
    health_retry_rate_pct: float = _setting(
        10.0, "Share of requests that needed a retry (%) that raises a warning.", runtime=True
    )
    health_timeout_rate_pct: float = _setting(
        2.0, "Share of requests that timed out (%) that raises a warning.", runtime=True
    )
    health_disconnect_rate_pct: float = _setting(
        5.0, "Share of requests with a client disconnect or an incomplete stream (%) that "
        "raises a warning.", runtime=True,
    )
    health_connection_failures: int = _setting(
        3, "Failed connections to one node in the window that raise a warning.", runtime=True
    )
    health_memory_pct: float = _setting(
        90.0, "Memory used on a node (%) that raises a warning; 97% or a node reporting "
        "critical pressure is critical.", runtime=True,
    )
    health_thrash_loads: int = _setting(
        3, "Cold loads of one model on one node in the window that count as thrashing.",
        runtime=True,
    )
    health_underused_share_pct: float = _setting(
        10.0, "A servable node that got less than this share (%) of its fair share of the "
        "fleet's requests in the window is reported as underutilised.", runtime=True,
    )
    health_queue_saturation_pct: float = _setting(
        80.0, "Waiting requests for a model, as % of max_queue_depth, that raise a warning.",
        runtime=True,
    )
    health_zombie_reaps: int = _setting(
        3, "Zombie requests reaped in the window that raise a warning (fewer: info).",
        runtime=True,
    )

    # --- retention and plugins
    trace_retention_days: float = _setting(
        30.0, "Days of request traces kept in latency.db and the traces stream.", runtime=True
    )
    recorder_enabled: bool = _setting(
        True,
        "The leader replica copies traces into <data dir>/latency.db. Turn off when a "
        "standalone `herd recorder` writes the one latency.db of the fleet.",
    )
    stats_retention_days: float = _setting(
        8.0, "Days of hourly usage statistics kept in Redis.", runtime=True
    )
    disabled_plugins: tuple[str, ...] = _setting(
        (), "Comma list of plugin names that are not registered."
    )
    plugins: tuple[str, ...] = _setting(
        (), "Comma list of plugins to register by import path, `module` or `module:object`, "
        "besides the built-ins and installed entry points (e.g. "
        "plugins.routing.baselines:round_robin).",
    )

    @property
    def data_path(self) -> Path:
        # Absolute: the embedded redis-server changes its working directory.
        return Path(self.data_dir).expanduser().absolute()

    @property
    def resolved_node_id(self) -> str:
        return self.node_id or socket.gethostname()

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build the settings: defaults, then FLEET_* variables, then overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in setting_fields():
            raw = env.get(env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = coerce(f.name, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = coerce(name, value)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(
            self, **{name: coerce(name, value) for name, value in changes.items()}
        )

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in setting_fields()}


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Settings)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh one for fields with a default factory)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


RUNTIME_FIELDS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(Settings) if f.metadata["runtime"]
)
_TYPES: dict[str, Any] = typing.get_type_hints(Settings)
_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}


_TYPE_WORDS: dict[Any, str] = {
    bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string",
    dict[str, float]: "a map of names to positive numbers",
    dict[str, str]: 'a JSON object of model names or globs to fleet model names',
}


def env_name(name: str) -> str:
    """The environment variable that sets a field."""
    return _FIELDS[name].metadata["env"] or ENV_PREFIX + name.upper()


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(value)


def _as_weights(value: Any) -> dict[str, float]:
    """A name -> positive number map, from a dict, JSON text or `a=0.2,b=2`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise ValueError
    out: dict[str, float] = {}
    for key, weight in value.items():
        if not isinstance(key, str) or not key or isinstance(weight, bool):
            raise ValueError
        number = float(weight)
        if not number > 0 or number == float("inf"):
            raise ValueError
        out[key] = number
    return out


def _as_aliases(value: Any) -> dict[str, str]:
    """A name-or-glob -> model name map, from a dict or JSON text."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError
    out: dict[str, str] = {}
    for key, target in value.items():
        if not isinstance(key, str) or not key.strip() or not isinstance(target, str):
            raise ValueError
        name = target.strip()
        if not valid_model_name(name):
            raise ValueError
        out[key.strip()] = name
    return out


def coerce(name: str, value: Any) -> Any:
    """Turn a value from the environment, a flag or JSON into the field's type, or refuse it."""
    if name not in _FIELDS:
        raise SettingsError(f"unknown setting {name!r}")
    kind = _TYPES[name]
    if kind == dict[str, dict[str, Any]]:
        try:
            return parse_pins(value)
        except PinError as exc:
            raise SettingsError(str(exc)) from None
    try:
        if kind is bool:
            result: Any = _as_bool(name, value)
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if not math.isfinite(result):  # NaN compares false with every bound
                raise ValueError
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError
            result = value
        elif kind == dict[str, float]:
            result = _as_weights(value)
        elif kind == dict[str, str]:
            result = _as_aliases(value)
        elif isinstance(value, str):  # tuple[str, ...] from here on
            result = tuple(part.strip() for part in value.split(",") if part.strip())
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            result = tuple(value)
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {_TYPE_WORDS.get(kind, 'a list of strings')}, "
                            f"got {value!r}") from None
    choices = _FIELDS[name].metadata["choices"]
    if choices and result not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {result!r}")
    return result


def markdown_table() -> str:
    """The settings table in docs/settings.md (regenerate with `python -m shared.settings`)."""
    rows = [
        "| variable | field | default | runtime | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in setting_fields():
        default = field_default(f)
        if isinstance(default, dict):
            shown = json.dumps(default) if default else ""
        else:
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
        runtime = "yes" if f.metadata["runtime"] else ""
        rows.append(
            f"| `{env_name(f.name)}` | `{f.name}` | {shown or '(empty)'} | {runtime} "
            f"| {f.metadata['help']} |"
        )
    return "\n".join(rows)


_HEADER = """# Settings

Every setting is one field of `shared.settings.Settings`, read once at start from a `FLEET_*`
environment variable; a command-line flag, where there is one, wins over the variable.
Fields marked *runtime* can also be changed while Herd runs, on every replica at once,
through `POST /dashboard/api/settings` (or the dashboard's Settings page).

This page is generated: `python -m shared.settings > docs/settings.md`.
"""

_REDIS_URLS = """## Redis URL forms (`FLEET_REDIS_URL`, `--redis-url`)

Every part of Herd that talks to Redis (a router replica's redis-py client and its lean
request-path connection) and `herd recorder` follow the one URL; node agents and the
dashboard reach Redis only through a router.
Passwords may be percent-encoded; a user name is for Redis 6 ACLs.

```
# plain TCP, database 0
redis://10.0.0.5:6379/0
# a password, and a Redis 6 ACL user
redis://herd:s3cret@10.0.0.5:6379/0
# a unix socket
unix:///run/redis/redis.sock?db=0
# TLS, checking the server against a CA file
rediss://:s3cret@redis.example.net:6380/0?ssl_ca_certs=/etc/herd/redis-ca.pem
# TLS with a client certificate
rediss://redis.example.net:6380/0?ssl_ca_certs=ca.pem&ssl_certfile=herd.pem&ssl_keyfile=herd.key
# TLS without checking the certificate (tests only)
rediss://127.0.0.1:6380/0?ssl_cert_reqs=none
# Sentinel: every Sentinel's address, then the master's name and the database
redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379/mymaster/0
# Sentinels with a password of their own
redis+sentinel://10.0.0.5:26379/mymaster/0?sentinel_password=sentinelpw
# Sentinels and Redis over TLS
rediss+sentinel://10.0.0.5:26379/mymaster/0?ssl_ca_certs=ca.pem
# a Redis Cluster: any of its nodes (the others are learned from it); database 0 only
redis+cluster://:s3cret@10.0.0.5:7000,10.0.0.6:7000,10.0.0.7:7000/
# a managed cluster's configuration endpoint, over TLS
rediss+cluster://default:s3cret@clustercfg.my-cache.xxxxxx.use1.cache.amazonaws.com:6379/
```

TLS query parameters are redis-py's: `ssl_ca_certs`, `ssl_ca_path`, `ssl_certfile`,
`ssl_keyfile`, `ssl_cert_reqs` (`none`, `optional`, `required`: the default),
`ssl_check_hostname` (default true; the certificate must name the host in the URL).
In a Sentinel URL the user and password are the master's; `sentinel_password` (and
`sentinel_username`) are the Sentinels' own, when they have one. Herd asks the Sentinels for
the master at every new connection and again after a failover (a lost connection or a
`READONLY` reply), so a promoted replica is followed without a restart.

In a cluster URL (`redis+cluster://`, `rediss+cluster://` for TLS to every node) the user
and password are every node's, and the hosts are only where Herd first asks for the
cluster's slot map: one reachable node is enough. On a cluster, every key Herd writes
carries `FLEET_REDIS_PREFIX` as its hash tag (`herd:` becomes `{herd}:`; a prefix that
already holds a tag, such as `{tenant7}:herd:`, is kept), so all of one deployment's keys
live in one hash slot: every Lua script, MULTI and pipeline stays on one node. On a single
Redis (and with Sentinel) the prefix is used as it is, so existing deployments keep their
keys. A cluster gives availability (a replica takes over a failed primary), not sharding: one
primary holds all of Herd's keys. See docs/operations.md, "Redis Cluster".

Managed services: ElastiCache with in-transit encryption, Azure Cache for Redis (port 6380),
Upstash and Redis Cloud take a `rediss://` URL, usually with a password and the provider's
public CA already trusted by the system (no `ssl_ca_certs` needed). See docs/operations.md
for what a Redis needs to serve Herd well (persistence, `maxmemory-policy noeviction`).
"""


def document() -> str:
    """docs/settings.md: the settings table and the Redis URL forms."""
    return f"{_HEADER}\n{markdown_table()}\n\n{_REDIS_URLS}"


if __name__ == "__main__":
    print(document(), end="")
