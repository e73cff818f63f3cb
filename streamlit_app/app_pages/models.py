"""Model Insights: per model, its demand, latency, cold loads and where it is loaded now;
and the pinned models the fleet keeps loaded, with a control to pin and unpin."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import FleetStatus, PinsListing
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


# The pins table's columns (GET /fleet/pins).
PIN_COLUMNS: widgets.Columns = {
    "model": st.column_config.TextColumn("Model"),
    "copies": widgets.count("Copies", help="Loaded copies the fleet keeps"),
    "state": st.column_config.TextColumn("State", width=90),
    "loaded_on": st.column_config.TextColumn("Loaded on", width=150),
    "reason": st.column_config.TextColumn("Why", width=360),
}


def pin_rows(listing: PinsListing) -> list[dict[str, Any]]:
    return [{"model": p.model, "copies": p.copies, "state": p.state,
             "loaded_on": ", ".join(p.loaded_on) or "-",
             "reason": p.reason or (f"only on {', '.join(p.nodes)}" if p.nodes else "")}
            for p in listing.pins]


def pins_section() -> None:
    st.subheader("Pinned models")
    st.caption("The leader keeps these loaded (a keep_alive that never runs out) and loads a "
               "missing copy within a heartbeat, where it fits beside the busy models.")
    reply = data.pins()
    if widgets.problem(reply, "pins") or reply.data is None:
        return
    if reply.data.pins:
        widgets.table(widgets.frame(pin_rows(reply.data), tuple(PIN_COLUMNS)), PIN_COLUMNS)
    else:
        st.info("No model is pinned.")
    with st.form("pin_form"):
        left, middle, right = st.columns([3, 1, 3])
        model = left.text_input("Model", placeholder="qwen3:8b", key="pin_model")
        copies = middle.number_input("Copies", min_value=1, max_value=64, value=1, step=1,
                                     key="pin_copies")
        nodes = right.text_input("Only on nodes (comma list, optional)", key="pin_nodes")
        pin, unpin = st.columns(2)
        pinned = pin.form_submit_button("Pin", type="primary", key="pin_save")
        unpinned = unpin.form_submit_button("Unpin", key="pin_remove")
    if (pinned or unpinned) and not model.strip():
        st.error("Name the model to pin or unpin.")
    elif pinned:
        named = [n.strip() for n in nodes.split(",") if n.strip()]
        saved = data.pin_model(model.strip(), int(copies), named)
        if saved.ok and saved.data is not None:
            st.success(f"Pinned {saved.data.model}: {saved.data.copies} "
                       f"cop{'y' if saved.data.copies == 1 else 'ies'}.")
        else:
            st.error(f"The router refused the pin: {saved.error}")
    elif unpinned:
        removed = data.unpin_model(model.strip())
        if removed.ok:
            st.success(f"Unpinned {model.strip()}: its copies go back to the nodes' "
                       "keep_alive.")
        else:
            st.error(f"The router refused: {removed.error}")


st.title("Model Insights")
live()
pins_section()
