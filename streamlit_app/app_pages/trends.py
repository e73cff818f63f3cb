"""Trends: requests, latency and tokens over time, from the router's hourly statistics.

Charts draw complete minutes (and hours) only: the running one would look like a fall in
traffic that is only the bucket not being over. Its figures so far are said in words.
"""

from __future__ import annotations

import msgspec
import pandas as pd
import streamlit as st

from shared.health import counted
from streamlit_app import data, widgets

RECENT_TRACES = 500
# Which numeric columns go on which chart, by words in their names.
CHARTS = (
    ("Requests", ("request", "count", "errors", "failed", "retries", "cold_loads")),
    ("Latency (ms)", ("latency", "ttft", "_ms", "duration")),
    ("Tokens", ("token",)),
)


# Names for the charts' legends and the table's headers (units in the chart titles).
LABELS = {"requests": "requests", "errors": "errors", "retries": "retries",
          "cold_loads": "cold loads", "prompt_tokens": "tokens in",
          "completion_tokens": "tokens out", "tokens": "tokens",
          "avg_latency_ms": "latency, average", "p95_latency_ms": "latency, p95",
          "avg_ttft_ms": "time to first token, average"}
NUMBERS: widgets.Columns = {
    "hour": st.column_config.DatetimeColumn("Hour (UTC)", format="MMM D, HH:mm"),
    "requests": widgets.count("Requests"),
    "errors": widgets.count("Errors"),
    "retries": widgets.count("Retries"),
    "cold_loads": widgets.count("Cold loads"),
    "prompt_tokens": widgets.count("Tokens in"),
    "completion_tokens": widgets.count("Tokens out"),
    "avg_latency_ms": widgets.ms("Latency avg"),
    "p95_latency_ms": widgets.ms("p95", help="95th percentile of the latency"),
    "avg_ttft_ms": widgets.ms("TTFT avg", help="Average time to the first token"),
}


def legend(df: pd.DataFrame) -> pd.DataFrame:
    """The columns renamed for a chart's legend."""
    return df.rename(columns=LABELS)


def chart_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    groups: list[tuple[str, pd.DataFrame]] = []
    used: set[str] = set()
    for title, words in CHARTS:
        columns = [c for c in df.columns
                   if c not in used and any(w in str(c).lower() for w in words)]
        used.update(columns)
        if columns:
            groups.append((title, df[columns]))
    rest = [c for c in df.columns if c not in used]
    if rest:
        groups.append(("Other", df[rest]))
    return groups


@st.fragment(run_every="5s")
def recent() -> None:
    reply = data.traces(RECENT_TRACES)
    if widgets.problem(reply, "recent requests") or reply.data is None:
        return
    traces = [msgspec.to_builtins(t) for t in reply.data.traces]
    df = widgets.per_minute(traces)
    if df is not None and len(traces) >= RECENT_TRACES:
        df = df.iloc[1:]  # the oldest minute is cut by the limit: only part of it is here
    if df is None:
        st.info("No requests yet: the charts fill in as requests pass through the router.")
        return
    df, partial = widgets.complete_only(df, 60)
    so_far = "" if partial is None else (
        f" This minute so far (not drawn until it ends): "
        f"{counted(int(partial['requests']), 'request')}, "
        f"{counted(int(partial['errors']), 'error')}.")
    if df.empty:
        st.info("No complete minute yet: the charts start when the first one ends." + so_far)
        return
    st.caption(f"The last {RECENT_TRACES} requests, per complete minute.{so_far}")
    left, right = st.columns(2)
    with left:
        st.markdown("**Requests and errors**")
        st.line_chart(legend(df[["requests", "errors"]]))
        st.markdown("**Tokens**")
        st.line_chart(legend(df[["tokens"]]))
    with right:
        st.markdown("**Latency (ms)**")
        st.line_chart(legend(df[["avg_latency_ms", "p95_latency_ms"]]))


@st.fragment(run_every="10s")
def hourly() -> None:
    reply = data.trends()
    if widgets.problem(reply, "trends") or reply.data is None:
        return
    rows = [msgspec.to_builtins(point) for point in reply.data.hours]
    df = widgets.time_frame(rows)
    if df is None or df.empty:
        st.info("No hourly statistics yet.")
        return
    numbers = widgets.trim_idle(df)
    df, partial = widgets.complete_only(df, 3600)
    # Idle hours before the first request are no trend: a young fleet has no complete hour.
    df = widgets.trim_idle(df) if df.ne(0).any(axis=None) else df.iloc[0:0]
    if partial is not None and "requests" in partial.index:
        st.caption("This hour so far (drawn when it ends): "
                   f"{counted(int(partial['requests']), 'request')}.")
    if df.empty:
        st.info("No complete hour yet: the recent minutes above show the traffic so far.")
    else:
        for title, part in chart_groups(df):
            st.markdown(f"**{title}**")
            st.line_chart(legend(part))
    with st.expander("Numbers"):
        numbers = numbers.sort_index(ascending=False)  # the newest hour first
        widgets.table(numbers.rename_axis("hour").reset_index(), NUMBERS)


st.title("Trends")
st.subheader("Recent minutes")
recent()
st.subheader("Hourly, last 24 h")
st.caption("Totals across every router replica.")
hourly()
