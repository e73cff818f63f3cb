"""UI pieces several pages share: the router-unreachable and fleet-state banners, the
empty-fleet hint, tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data

__all__ = [
    "TIME_COLUMNS",
    "ago",
    "complete_only",
    "empty_fleet",
    "event_line",
    "frame",
    "per_minute",
    "problem",
    "severity_icon",
    "status_icon",
    "time_frame",
    "trim_idle",
]

TIME_COLUMNS = ("timestamp", "time", "ts", "hour", "bucket", "start", "started_at", "date")
# Material icons ship with Streamlit; emoji need a font a headless server may not have.
_STATUS_ICONS = {"online": ":green[:material/check_circle:]",
                 "degraded": ":orange[:material/error:]",
                 "offline": ":red[:material/cancel:]",
                 "draining": ":blue[:material/pause_circle:]"}
_SEVERITY_ICONS = {"critical": ":red[:material/error:]", "warning": ":orange[:material/warning:]",
                   "info": ":blue[:material/info:]"}


_EVENT_ICONS = {"retry": ":orange[:material/replay:]",
                "context_protection": ":blue[:material/shield:]",
                "zombie_reaped": ":orange[:material/cleaning_services:]",
                "auto_pull": ":blue[:material/download:]",
                "model_loaded": ":green[:material/upload:]",
                "model_unloaded": ":gray[:material/download_done:]"}


def status_icon(status: Any) -> str:
    return _STATUS_ICONS.get(str(status).lower(), ":gray[:material/help:]")


def severity_icon(severity: Any) -> str:
    return _SEVERITY_ICONS.get(str(severity).lower(), ":gray[:material/help:]")


def problem(reply: data.Reply[Any], what: str = "this page") -> bool:
    """Show why a reply has no data; True when the page should stop drawing."""
    if reply.unreachable:
        st.error(
            f"**The router is unreachable.** {reply.error}. "
            "This page keeps retrying every couple of seconds; check that `herd` is running "
            f"and that `--router-url` points at it ({data.config().router_url})."
        )
        return True
    if reply.fleet_state == "unavailable":
        st.error(
            f"**The fleet state is unavailable.** The router is up, but its Redis, where the "
            f"fleet's shared state lives, does not answer ({reply.error}), so it cannot show "
            f"{what}. This page keeps retrying and fills in as soon as Redis answers again."
        )
        return True
    if reply.fleet_state == "rebuilding":
        st.warning(
            f"**The fleet state is being rebuilt.** Redis came back empty and the nodes are "
            f"registering again ({reply.error}); {what} shows here within a few seconds."
        )
        return True
    if reply.status == 404:
        st.info(f"The router does not offer {what} yet ({reply.error}).")
        return True
    if reply.error:
        st.error(f"The router could not answer for {what}: {reply.error}")
        return True
    return False


def empty_fleet() -> None:
    url = data.config().router_url
    st.info(
        "**No nodes have joined the fleet yet.** On each machine that runs Ollama, start the "
        "node agent and point it at this router:"
    )
    st.code(f"herd-node --router-url {url} --ollama-host http://localhost:11434", language="bash")
    st.caption(
        "On the same network, `herd-node` alone also finds the router over mDNS. "
        "Nodes appear here within a few seconds of their first heartbeat."
    )


def _named(value: Mapping[str, Any]) -> str:
    """What a nested object in a table cell is called (a loaded model, an installed one)."""
    name = value.get("name") or value.get("model") or value.get("node_id")
    return str(name if name is not None else dict(value))


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(_named(v) if isinstance(v, Mapping) else str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


def frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = ()) -> pd.DataFrame:
    """A display table: nested values flattened to text, chosen columns first."""
    flat = [{k: _cell(v) for k, v in row.items()} for row in rows]
    df = pd.DataFrame(flat)
    if columns:
        first = [c for c in columns if c in df.columns]
        df = df[first + [c for c in df.columns if c not in first]]
    return df


def _as_time(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series):
        unit = "ms" if series.dropna().gt(1e11).any() else "s"
        return pd.to_datetime(series, unit=unit, utc=True)
    return pd.to_datetime(series, utc=True, errors="coerce")


def time_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame | None:
    """Rows with a time column, indexed by time and keeping numeric columns; None if none."""
    if not rows:
        return None
    df = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list | dict)}
                       for r in rows])
    column = next((c for c in TIME_COLUMNS if c in df.columns), None)
    if column is None:
        return None
    try:
        df[column] = _as_time(df[column])
    except (ValueError, TypeError, OverflowError):
        return None
    df = df.dropna(subset=[column]).set_index(column).sort_index()
    numeric = df.select_dtypes("number")
    return numeric if not numeric.empty else None


def per_minute(traces: Sequence[Mapping[str, Any]]) -> pd.DataFrame | None:
    """Recent traces bucketed by minute: requests, errors, latency and tokens; None if empty."""
    rows = [t for t in traces if isinstance(t.get("timestamp"), int | float)]
    if not rows:
        return None
    df = pd.DataFrame({
        "time": pd.to_datetime([float(t["timestamp"]) for t in rows], unit="s", utc=True),
        "requests": 1,
        "errors": [int(str(t.get("status", "")) not in ("completed", "")) for t in rows],
        "latency_ms": [float(t.get("latency_ms") or 0.0) for t in rows],
        "tokens": [int(t.get("prompt_tokens") or 0) + int(t.get("completion_tokens") or 0)
                   for t in rows],
    }).set_index("time")
    minute = df.resample("1min")
    out = pd.DataFrame({
        "requests": minute["requests"].sum(),
        "errors": minute["errors"].sum(),
        "avg_latency_ms": minute["latency_ms"].mean().round(1),
        "p95_latency_ms": minute["latency_ms"].quantile(0.95).round(1),
        "tokens": minute["tokens"].sum(),
    })
    return out.fillna(0)


def trim_idle(df: pd.DataFrame) -> pd.DataFrame:
    """Drop the leading rows where nothing happened, so a young fleet's chart is not flat."""
    busy = df.ne(0).any(axis=1)
    if not busy.any():
        return df.iloc[-1:]
    first = busy.to_numpy().argmax()
    return df.iloc[max(first - 1, 0):]


def ago(timestamp: Any) -> str:
    """"12 s ago" for an epoch timestamp, or an em dash."""
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        return data.EMPTY
    seconds = dt.datetime.now(dt.UTC).timestamp() - float(timestamp)
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _clock(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        return data.EMPTY
    return dt.datetime.fromtimestamp(float(timestamp), dt.UTC).strftime("%H:%M:%S")


def event_line(event: Mapping[str, Any]) -> str:
    """One line of the overview's event feed (markdown): UTC time, icon, what happened."""
    kind = str(event.get("kind", "event"))
    node = f"**{event.get('node_id') or '?'}**"
    model = f"`{event.get('model') or '?'}`"
    icon = _EVENT_ICONS.get(kind, ":gray[:material/info:]")
    if kind == "node_status":
        icon = status_icon(event.get("new"))
        text = f"{node} {event.get('old') or '?'} → {event.get('new') or '?'}"
    elif kind == "retry":
        text = f"retry: {model} failed on {node} ({event.get('reason') or 'error'}), " \
               "sent to another node"
    elif kind == "zombie_reaped":
        count = event.get("count", 1)
        text = f"{count} zombie slot{'' if count == 1 else 's'} of {model} on {node} reaped"
    elif kind == "auto_pull":
        stage = event.get("stage") or "?"
        text = f"auto-pull of {model} on {node}: {stage}"
        if event.get("error"):
            text += f" ({event['error']})"
    elif kind in {"model_loaded", "model_unloaded"}:
        text = f"{model} {kind.removeprefix('model_')} on {node}"
    elif event.get("message"):
        text = str(event["message"])
    else:
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in {"kind", "ts"})
        text = f"{kind}: {details}" if details else kind
    return f"`{_clock(event.get('ts'))}` {icon} {text}"


def complete_only(
    df: pd.DataFrame, width_s: float, now: float | None = None,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The rows of time buckets that have ended, and the current (partial) one, if any.

    A chart of counts that drew the running bucket would show a fall in traffic that is
    only the bucket not being over yet.
    """
    if df.empty or not isinstance(df.index, pd.DatetimeIndex):
        return df, None
    moment = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    cutoff = pd.Timestamp(moment - width_s, unit="s", tz="UTC")
    ended = df.index <= cutoff
    partial = df[~ended]
    return df[ended], (partial.iloc[-1] if not partial.empty else None)
