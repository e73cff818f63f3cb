"""Model Insights: per model, its demand, latency, cold loads and where it is loaded now."""

from __future__ import annotations

from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import pick

PREFERRED = ("models", "per_model", "stats")
COLUMNS = ("model", "requests", "loaded_on", "avg_latency_ms", "p95_latency_ms",
           "avg_ttft_ms", "cold_loads", "errors", "prompt_tokens", "completion_tokens")


def loaded_where(status: Any) -> dict[str, list[str]]:
    """model -> nodes that have it loaded, from /fleet/status."""
    where: dict[str, list[str]] = {}
    for node in widgets.records(pick(status, "nodes", default=[])):
        name = str(pick(node, "node_id", "id", default="?"))
        models = pick(node, ("ollama", "models_loaded"), "models_loaded", default=[])
        for model in widgets.records(models):
            where.setdefault(str(pick(model, "name", "model", default="?")), []).append(name)
    return where


@st.fragment(run_every="5s")
def live() -> None:
    reply = data.models()
    if widgets.problem(reply, "model statistics"):
        return
    status = data.fleet_status()
    where = loaded_where(status.data) if status.ok else {}
    rows = widgets.find_records(reply.data, PREFERRED, key_name="model")
    seen = {str(pick(r, "model", "name", default="")) for r in rows}
    for row in rows:
        row.setdefault("model", row.get("name", "?"))
        row.setdefault("loaded_on", where.get(str(row["model"]), []))
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
