"""Trends: requests, latency and tokens over time, from the router's hourly statistics."""

from __future__ import annotations

import msgspec
import pandas as pd
import streamlit as st

from streamlit_app import data, widgets

RECENT_TRACES = 500
# Which numeric columns go on which chart, by words in their names.
CHARTS = (
    ("Requests", ("request", "count", "errors", "failed", "retries", "cold_loads")),
    ("Latency (ms)", ("latency", "ttft", "_ms", "duration")),
    ("Tokens", ("token",)),
)


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
    df = widgets.per_minute([msgspec.to_builtins(t) for t in reply.data.traces])
    if df is None:
        st.info("No requests yet: the charts fill in as requests pass through the router.")
        return
    st.caption(f"The last {RECENT_TRACES} requests, per minute.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Requests and errors**")
        st.line_chart(df[["requests", "errors"]])
        st.markdown("**Tokens**")
        st.line_chart(df[["tokens"]])
    with right:
        st.markdown("**Latency (ms)**")
        st.line_chart(df[["avg_latency_ms", "p95_latency_ms"]])


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
    df = widgets.trim_idle(df)
    for title, part in chart_groups(df):
        st.markdown(f"**{title}**")
        st.line_chart(part)
    with st.expander("Numbers"):
        st.dataframe(df, width="stretch")


st.title("Trends")
st.subheader("Recent minutes")
recent()
st.subheader("Hourly, last 24 h")
st.caption("Totals across every router replica.")
hourly()
