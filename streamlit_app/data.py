"""The dashboard's one door to the router: its HTTP API, read with short caches, never Redis.

Every answer is decoded into the router's own response structs (`shared/schemas.py`), the
same classes the router's OpenAPI document describes, so pages use typed fields. An answer
that does not decode (a router of another version) is shown as an error saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import streamlit as st

from shared.errors import STATE_HEADER
from shared.schemas import (
    AppsReport,
    BenchmarkList,
    BenchmarkRun,
    DeleteAnswer,
    ErrorAnswer,
    FleetQueue,
    FleetStatus,
    HealthReport,
    KeyCreated,
    KeyList,
    KeyRevoked,
    ModelManagement,
    ModelsReport,
    OpenAIErrorAnswer,
    PinChange,
    PinsListing,
    PullProgress,
    Recommendations,
    SettingsListing,
    SettingsUpdate,
    TraceList,
    TrendsReport,
    UsageReport,
)
from shared.settings import Settings

__all__ = [
    "DEFAULT_ROUTER_URL",
    "Config",
    "Reply",
    "apps",
    "benchmarks",
    "config",
    "decode",
    "delete_model",
    "error_message",
    "fleet_queue",
    "fleet_status",
    "fmt",
    "health",
    "load_model",
    "model_management",
    "models",
    "parse_config",
    "pin_model",
    "pins",
    "pull_model",
    "recommendations",
    "refresh",
    "router_settings",
    "save_settings",
    "start_benchmark",
    "traces",
    "trends",
    "unpin_model",
    "usage",
]

DEFAULT_ROUTER_URL = "http://localhost:11435"
# Live tiles refresh every 2 s; a cache a little shorter means each refresh reads fresh data
# while several tiles drawn in one run share one request.
LIVE_TTL = 1.5
SLOW_TTL = 10.0
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
PULL_TIMEOUT = httpx.Timeout(None, connect=5.0)
EMPTY = "—"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Config:
    """Where the router is and how to authenticate; from the script's arguments."""

    router_url: str = DEFAULT_ROUTER_URL
    admin_token: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}


def parse_config(argv: Sequence[str], settings: Settings | None = None) -> Config:
    """`--router-url` from the arguments after `streamlit run app.py --`; the admin token
    from the settings (FLEET_ADMIN_TOKEN), never from a command line others can read.

    Unknown arguments are ignored: under AppTest the arguments are pytest's.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--router-url", default=DEFAULT_ROUTER_URL)
    known, _ = parser.parse_known_args(list(argv))
    url = str(known.router_url).strip().rstrip("/") or DEFAULT_ROUTER_URL
    if "://" not in url:
        url = "http://" + url
    token = (settings or Settings.load()).admin_token
    return Config(router_url=url, admin_token=token)


def config() -> Config:
    return parse_config(sys.argv[1:])


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """One answer from the router: its decoded body, or why there is none (status 0:
    unreachable). `data` is None exactly when `error` says why. `fleet_state` is the
    router's X-Herd-State on a 503: "unavailable" (its Redis does not answer) or
    "rebuilding" (Redis came back empty)."""

    data: T | None = None
    error: str = ""
    status: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    fleet_state: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def unreachable(self) -> bool:
        return bool(self.error) and self.status == 0


def error_message(body: Any, status: int) -> str:
    """The human part of an error body: Ollama's shape, OpenAI's, or whatever a server that
    is not a Herd router sent."""
    with contextlib.suppress(msgspec.ValidationError):
        return f"{msgspec.convert(body, ErrorAnswer).error} (HTTP {status})"
    with contextlib.suppress(msgspec.ValidationError):
        return f"{msgspec.convert(body, OpenAIErrorAnswer).error.message} (HTTP {status})"
    if isinstance(body, Mapping) and (other := body.get("detail") or body.get("message")):
        return f"{other} (HTTP {status})"
    if isinstance(body, str) and body.strip():
        return f"{body.strip()[:300]} (HTTP {status})"
    return f"the router answered HTTP {status}"


def _decode(response: httpx.Response) -> Reply[Any]:
    """A router's answer as a Reply: its body, and the error it says when it failed."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        return Reply(body, error_message(body, response.status_code), response.status_code,
                     fleet_state=response.headers.get(STATE_HEADER, ""))
    return Reply(body, "", response.status_code)


def _unreachable(cfg: Config, exc: Exception) -> Reply[Any]:
    """The Reply of a request that never reached the router."""
    reason = type(exc).__name__ if not str(exc) else str(exc)
    return Reply(None, f"cannot reach the router at {cfg.router_url}: {reason}", 0)


def _request(
    cfg: Config, method: str, path: str, *,
    params: Mapping[str, Any] | None = None, body: Any = None,
) -> Reply[Any]:
    try:
        response = httpx.request(
            method, cfg.router_url + path, params=dict(params or {}), json=body,
            headers=cfg.headers(), timeout=TIMEOUT, follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        return _unreachable(cfg, exc)
    return _decode(response)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=64)
def _live(url: str, token: str, path: str, params: tuple[tuple[str, Any], ...] = (),
          epoch: str = "") -> Reply[Any]:
    # `epoch` is only part of the cache key: a new one reads afresh (something happened).
    return _request(Config(url, token), "GET", path, params=dict(params))


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=64)
def _slow(url: str, token: str, path: str,
          params: tuple[tuple[str, Any], ...] = ()) -> Reply[Any]:
    return _request(Config(url, token), "GET", path, params=dict(params))


def _where() -> tuple[str, str]:
    """The router this dashboard reads, and the admin token it reads with."""
    cfg = config()
    return cfg.router_url, cfg.admin_token


def refresh() -> None:
    """Forget cached reads, after a change or when the user asks for fresh data."""
    _live.clear()
    _slow.clear()


def decode(reply: Reply[Any], shape: type[T]) -> Reply[T]:
    """The reply's JSON as `shape`, or an error saying the router answered something else."""
    if not reply.ok:
        return replace(reply, data=None)
    try:
        body = msgspec.convert(reply.data, shape)
    except msgspec.ValidationError as exc:
        return replace(reply, data=None, error=(
            f"the router's answer is not what this dashboard reads ({exc}); "
            "are the router and the dashboard the same version?"))
    return replace(reply, data=body)


# --- reads
def fleet_status() -> Reply[FleetStatus]:
    return decode(_live(*_where(), "/fleet/status"), FleetStatus)


def fleet_queue() -> Reply[FleetQueue]:
    return decode(_live(*_where(), "/fleet/queue"), FleetQueue)


def health(epoch: str = "") -> Reply[HealthReport]:
    """The health report; a new `epoch` (the live stream's version) skips the cache."""
    return decode(_live(*_where(), "/dashboard/api/health", (), epoch), HealthReport)


def traces(limit: int = 50) -> Reply[TraceList]:
    return decode(_live(*_where(), "/dashboard/api/traces", (("limit", int(limit)),)),
                  TraceList)


def usage() -> Reply[UsageReport]:
    return decode(_live(*_where(), "/dashboard/api/usage"), UsageReport)


def apps() -> Reply[AppsReport]:
    return decode(_live(*_where(), "/dashboard/api/apps"), AppsReport)


def trends() -> Reply[TrendsReport]:
    return decode(_live(*_where(), "/dashboard/api/trends"), TrendsReport)


def models() -> Reply[ModelsReport]:
    return decode(_live(*_where(), "/dashboard/api/models"), ModelsReport)


def recommendations() -> Reply[Recommendations]:
    return decode(_slow(*_where(), "/dashboard/api/recommendations"), Recommendations)


def model_management() -> Reply[ModelManagement]:
    return decode(_live(*_where(), "/dashboard/api/model-management"), ModelManagement)


def router_settings() -> Reply[SettingsListing]:
    return decode(_slow(*_where(), "/dashboard/api/settings"), SettingsListing)


def benchmarks() -> Reply[BenchmarkList]:
    return decode(_live(*_where(), "/dashboard/api/benchmarks"), BenchmarkList)


def pins() -> Reply[PinsListing]:
    return decode(_live(*_where(), "/fleet/pins"), PinsListing)


# --- writes (never cached; each clears the caches so the next read shows the change)
def save_settings(changes: Mapping[str, Any]) -> Reply[SettingsUpdate]:
    reply = _request(config(), "POST", "/dashboard/api/settings", body=dict(changes))
    refresh()
    return decode(reply, SettingsUpdate)


def pin_model(model: str, copies: int, nodes: Sequence[str] = ()) -> Reply[PinChange]:
    body: dict[str, Any] = {"model": model, "copies": int(copies)}
    if nodes:
        body["nodes"] = list(nodes)
    reply = _request(config(), "POST", "/fleet/pins", body=body)
    refresh()
    return decode(reply, PinChange)


def unpin_model(model: str) -> Reply[PinChange]:
    reply = _request(config(), "DELETE", "/fleet/pins", params={"model": model})
    refresh()
    return decode(reply, PinChange)


def delete_model(model: str, node_id: str) -> Reply[DeleteAnswer]:
    reply = _request(
        config(), "POST", "/dashboard/api/delete", body={"model": model, "node_id": node_id}
    )
    refresh()
    return decode(reply, DeleteAnswer)


def load_model(model: str, node_id: str = "") -> Reply[Any]:
    """Warm a model: an empty generate, the way Ollama itself loads without generating."""
    body: dict[str, Any] = {"model": model, "prompt": "", "stream": False}
    headers = {"X-Herd-Node": node_id} if node_id else {}
    cfg = config()
    try:
        response = httpx.post(
            cfg.router_url + "/api/generate", json=body,
            headers={**cfg.headers(), **headers}, timeout=httpx.Timeout(120.0, connect=2.0),
        )
    except httpx.HTTPError as exc:
        return _unreachable(cfg, exc)
    refresh()
    reply = _decode(response)
    return replace(reply, extra={"node": response.headers.get("X-Fleet-Node", "")})


def start_benchmark(options: Mapping[str, Any]) -> Reply[BenchmarkRun]:
    reply = _request(config(), "POST", "/dashboard/api/benchmarks", body=dict(options))
    refresh()
    return decode(reply, BenchmarkRun)


# --- client keys (admin only; never cached: a secret is shown once, a revocation at once)
def client_keys() -> Reply[KeyList]:
    return decode(_request(config(), "GET", "/dashboard/api/keys"), KeyList)


def create_key(app: str, requests_per_minute: int = 0,
               tokens_per_minute: int = 0) -> Reply[KeyCreated]:
    """A new key for `app`; the reply holds its secret, which no later read returns."""
    return decode(_request(config(), "POST", "/dashboard/api/keys", body={
        "app": app, "requests_per_minute": int(requests_per_minute),
        "tokens_per_minute": int(tokens_per_minute)}), KeyCreated)


def set_client_auth(mode: str) -> Reply[SettingsUpdate]:
    """Open ("open") or close ("keys") inference to requests without a credential; the
    router refuses "open" while any key exists."""
    return save_settings({"client_auth": mode})


def revoke_key(app: str) -> Reply[KeyRevoked]:
    return decode(_request(config(), "DELETE", f"/dashboard/api/keys/{quote(app, safe='')}"),
                  KeyRevoked)


_progress = msgspec.json.Decoder(PullProgress).decode


def pull_model(model: str, node_id: str) -> Iterator[PullProgress]:
    """Yield the node's pull progress lines as they arrive; a failure is a line with error."""
    cfg = config()
    try:
        with httpx.stream(
            "POST", cfg.router_url + "/dashboard/api/pull",
            json={"model": model, "node_id": node_id}, headers=cfg.headers(),
            timeout=PULL_TIMEOUT,
        ) as response:
            if response.status_code >= 400:
                response.read()
                reply = _decode(response)
                yield PullProgress(error=reply.error)
                return
            for raw in response.iter_lines():
                line = raw.strip()
                if line.startswith("data:"):  # tolerate SSE framing as well as NDJSON
                    line = line[5:].strip()
                if not line:
                    continue
                try:
                    yield _progress(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    yield PullProgress(status=line)
    except httpx.HTTPError as exc:
        yield PullProgress(error=_unreachable(cfg, exc).error)
    finally:
        refresh()


# --- formatting for the pages
def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    """A number or text for display; missing values show as an em dash."""
    if value is None or value == "" or isinstance(value, list | dict):
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        if math.isnan(value):
            return EMPTY
        text = f"{value:,.{digits}f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip() if unit else text
