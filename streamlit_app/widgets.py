"""UI pieces several pages share: the router-unreachable and fleet-state banners, the
empty-fleet hint, tables, meters and the health score's bands."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import pandas as pd
import streamlit as st

from streamlit_app import data

__all__ = [
    "HEALTH_BANDS",
    "TIME_COLUMNS",
    "Band",
    "Colour",
    "Columns",
    "ago",
    "complete_only",
    "count",
    "empty_fleet",
    "event_line",
    "frame",
    "health_band",
    "meter",
    "ms",
    "number",
    "per_minute",
    "problem",
    "severity_icon",
    "status_icon",
    "table",
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
                "model_unloaded": ":gray[:material/download_done:]",
                "pin": ":blue[:material/keep:]",
                "warm_copy": ":green[:material/bolt:]"}


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
    elif kind == "pin":
        state = event.get("state") or "?"
        if state == "short":
            icon = ":orange[:material/warning:]"
        text = f"pin {model}: {state}"
        if event.get("reason"):
            text += f" ({event['reason']})"
    elif kind == "warm_copy":
        what = "pinned copy" if event.get("action") == "pin" else \
            "queue copy" if event.get("action") == "queue" else str(event.get("action") or "?")
        text = f"{what} of {model} on {node}: {event.get('stage') or '?'}"
        if event.get("stage") == "started" and event.get("reason"):
            text += f" ({event['reason']})"
        elif event.get("error"):
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


# --- tables that fit the page ---------------------------------------------------------------
# A table names the columns it shows, each with its header (units in it) and number format;
# the other fields of the rows stay in the data (tests and downloads read them by name) but
# are not drawn, so a table is no wider than the page at 1280 px.
Columns = Mapping[str, Any]  # column -> st.column_config.* of that column


def number(label: str, fmt: str = "localized", help: str | None = None) -> Any:
    """A numeric column; `fmt` is a printf format ("%.2f") or one of Streamlit's names."""
    return st.column_config.NumberColumn(label, format=fmt, help=help)


def count(label: str, help: str | None = None) -> Any:
    """A whole number, with thousands separators."""
    return number(label, "localized", help)


def ms(label: str, help: str | None = None) -> Any:
    """A duration in milliseconds: the unit in the header, whole numbers in the cells."""
    return number(f"{label} (ms)", "%.0f", help)


def table(rows: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Columns,
          **options: Any) -> None:
    """A dataframe as wide as the page: the named columns only, in that order."""
    df = rows if isinstance(rows, pd.DataFrame) else frame(rows, tuple(columns))
    shown = [c for c in columns if c in df.columns]
    st.dataframe(df, hide_index=True, width="stretch", column_order=shown,
                 column_config={c: columns[c] for c in shown}, **options)


# --- meters and the health score's bands ------------------------------------------------------
# Hex values of Streamlit's own palette, so a meter matches the :green[...] text and metric
# deltas beside it. (st.progress always draws in the theme's primary colour, red by default,
# which made a full health score look like an alarm.)
Colour = Literal["green", "orange", "red", "blue", "gray"]
COLOURS: dict[Colour, str] = {"green": "#21c354", "orange": "#ffa421", "red": "#ff4b4b",
                              "blue": "#1c83e1", "gray": "#a3a8b8"}


class Band(NamedTuple):
    """One band of the health score: its lowest score, colour and word."""

    lowest: int
    colour: Colour
    word: str


# The score is 100 - 20 per critical - 10 per warning - 3 per info (shared/health.py). Good:
# no critical finding and at most one warning; fair: one critical, or up to three warnings;
# poor below. The score's number, chip and meter all take their colour from here.
HEALTH_BANDS = (Band(90, "green", "good"), Band(70, "orange", "fair"), Band(0, "red", "poor"))


def health_band(score: float) -> Band:
    """The band a health score falls in; scores outside 0..100 are clamped."""
    for band in HEALTH_BANDS:
        if score >= band.lowest:
            return band
    return HEALTH_BANDS[-1]


def meter(label: str, share: float, colour: Colour, value: str = "") -> None:
    """A horizontal bar, `share` (0..1) filled in one of COLOURS' colours; with a `value`, a
    line above it says `label` and `value`, else `label` is only read out by screen readers."""
    filled = round(100 * min(max(share, 0.0), 1.0), 1)
    fill = COLOURS[colour]
    words = ('<div style="display:flex;justify-content:space-between;gap:0.5rem;'
             'font-size:0.875rem;line-height:1.4;margin-bottom:0.25rem">'
             f"<span>{html.escape(label)}</span><span>{html.escape(value)}</span></div>"
             if value else "")
    st.html(
        f'<div class="herd-meter" role="meter" aria-label="{html.escape(label)}" '
        f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{filled}" data-colour="{colour}">'
        f"{words}"
        '<div style="height:0.5rem;border-radius:0.25rem;background:rgba(151,166,195,0.25);'
        'overflow:hidden">'
        f'<div style="height:100%;width:{filled}%;background:{fill}"></div></div></div>'
    )
