"""Model Insights: per model, its demand, latency, cold loads and where it is loaded now."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import FleetStatus
from streamlit_app import data, widgets

COLUMNS = ("model", "requests", "loaded_on", "avg_latency_ms", "p95_latency_ms",
           "avg_ttft_ms", "cold_loads", "errors", "prompt_tokens", "completion_tokens")


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
    df = widgets.frame(rows, COLUMNS)
    if "requests" in df.columns:
        st.subheader("Demand")
        st.bar_chart(df.set_index("model")["requests"])
    latency = [c for c in ("avg_latency_ms", "p95_latency_ms", "avg_ttft_ms") if c in df.columns]
    if latency:
        st.subheader("Latency (ms)")
        st.bar_chart(df.set_index("model")[latency], stack=False)
    st.subheader("All models")
    st.dataframe(df, hide_index=True, width="stretch")


st.title("Model Insights")
live()
