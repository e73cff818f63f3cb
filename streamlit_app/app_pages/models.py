"""Model Insights: per model, its demand, latency, cold loads and where it is loaded now."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import FleetStatus
from streamlit_app import data, widgets

# The table's columns, headers with their units; the rest of /dashboard/api/models stays in
# the data, undrawn, so the table fits a page 1280 px wide.
COLUMNS: widgets.Columns = {
    "model": st.column_config.TextColumn("Model"),
    "requests": widgets.count("Requests", help="In the last 24 h"),
    "errors": widgets.count("Errors"),
    "loaded_on": st.column_config.TextColumn("Loaded on", width=150),
    "avg_latency_ms": widgets.ms("Latency avg"),
    "p95_latency_ms": widgets.ms("p95", help="95th percentile of the latency"),
    "avg_ttft_ms": widgets.ms("TTFT avg", help="Average time to the first token"),
    "cold_loads": widgets.count("Cold loads"),
}
# The latency chart's series, named for its legend.
LATENCY = {"avg_latency_ms": "latency, average", "p95_latency_ms": "latency, p95",
           "avg_ttft_ms": "time to first token, average"}


def loaded_where(status: FleetStatus) -> dict[str, list[str]]:
    """model -> nodes that have it loaded, from /fleet/status."""
    where: dict[str, list[str]] = {}
    for node in status.nodes:
        for model in node.models_loaded:
            where.setdefault(model.name, []).append(node.node_id)
    return where


@st.fragment(run_every="5s")
def live() -> None:
    reply = data.models()
    if widgets.problem(reply, "model statistics") or reply.data is None:
        return
    status = data.fleet_status()
    where = loaded_where(status.data) if status.data is not None else {}
    rows: list[dict[str, Any]] = [msgspec.to_builtins(m) for m in reply.data.models]
    seen = {m.model for m in reply.data.models}
    for row in rows:
        row["loaded_on"] = row["loaded_on"] or where.get(str(row["model"]), [])
    rows += [{"model": m, "requests": 0, "loaded_on": nodes}
             for m, nodes in where.items() if m not in seen]
    if not rows:
        st.info("No model has been requested or loaded yet.")
        return
    df = widgets.frame(rows, tuple(COLUMNS))
    if "requests" in df.columns:
        st.subheader("Demand")
        st.bar_chart(df.set_index("model")["requests"], y_label="requests in 24 h")
    latency = [c for c in LATENCY if c in df.columns]
    if latency:
        st.subheader("Latency (ms)")
        st.bar_chart(df.set_index("model")[latency].rename(columns=LATENCY), stack=False)
    st.subheader("All models")
    widgets.table(df, COLUMNS)


st.title("Model Insights")
live()
