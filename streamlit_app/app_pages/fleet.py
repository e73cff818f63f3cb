"""Fleet Overview: one card per node (status, CPU, memory, loaded models), queues, in flight,
and the fleet's events as they happen; drawn from the router's live stream."""

from __future__ import annotations

from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import fmt, pick

CARDS_PER_ROW = 3
FEED_ROWS = 15


def loaded_models(node: Any) -> list[dict[str, Any]]:
    found = pick(node, ("ollama", "models_loaded"), "models_loaded", "loaded_models", default=[])
    return widgets.records(found)


def node_card(node: Any) -> None:
    name = pick(node, "node_id", "id", "name", default="?")
    status = pick(node, "status", default="unknown")
    with st.container(border=True):
        st.markdown(f"#### {widgets.status_icon(status)} {name}")
        st.caption(f"{status} · last heartbeat {widgets.ago(pick(node, 'last_seen', 'timestamp'))}")
        cpu = pick(node, ("cpu", "utilization_pct"), "cpu_pct", "cpu_utilization")
        total = pick(node, ("memory", "total_gb"), "memory_total_gb")
        used = pick(node, ("memory", "used_gb"), "memory_used_gb")
        left, right = st.columns(2)
        left.metric("CPU", fmt(cpu, "%"))
        right.metric(f"Memory of {fmt(total, 'GB')}", fmt(used, "GB"))
        if isinstance(used, int | float) and isinstance(total, int | float) and total > 0:
            st.progress(min(max(used / total, 0.0), 1.0))
        pressure = pick(node, ("memory", "pressure"))
        if pressure and pressure != "normal":
            st.warning(f"memory pressure: {pressure}")
        models = loaded_models(node)
        if not models:
            st.caption("no model loaded")
        for model in models:
            ctx = pick(model, "context_length", "num_ctx", "context")
            size = pick(model, "size_gb", "size_vram_gb")
            active = pick(model, "requests_active", "in_flight")
            st.markdown(
                f"`{pick(model, 'name', 'model', default='?')}` · ctx {fmt(ctx)} · "
                f"{fmt(size, 'GB')} · {fmt(active)} active"
            )


def queue_rows(queues: Any) -> list[dict[str, Any]]:
    rows = []
    for row in widgets.records(queues, key_name="node:model"):
        rows.append({
            "node:model": row.get("node:model", "?"),
            "pending": row.get("pending", 0),
            "in flight": f"{fmt(row.get('in_flight'))} / {fmt(row.get('max_concurrent'))}",
            "done": row.get("done", 0),
            "failed": row.get("failed", 0),
        })
    return rows


def live_caption(view: data.LiveView) -> None:
    if view.connected:
        st.caption(f":green[:material/sensors:] Live: updated {widgets.ago(view.received_at)}"
                   " from the router's event stream")
    else:
        st.caption(f":orange[:material/sensors_off:] Live updates paused "
                   f"({view.error or 'connecting'}); showing a plain read, retrying")


@st.fragment(run_every=data.LIVE_EVERY)
def live() -> None:
    # From the stream's latest snapshot: no request to the router per refresh.
    reply, view = data.live_fleet()
    if widgets.problem(reply, "the fleet status"):
        return
    body = reply.data
    fleet = pick(body, "fleet", default={})
    nodes = widgets.records(pick(body, "nodes", default=[]), key_name="node_id")
    live_caption(view)
    cols = st.columns(4)
    cols[0].metric("Nodes online", f"{fmt(pick(fleet, 'nodes_online'))} / "
                                   f"{fmt(pick(fleet, 'nodes_total'))}")
    cols[1].metric("Models loaded", fmt(pick(fleet, "models_loaded")))
    cols[2].metric("Requests in flight", fmt(pick(fleet, "requests_active")))
    waiting = pick(fleet, "requests_waiting", default=sum(
        int(q.get("pending") or 0) for q in widgets.records(pick(body, "queues"))))
    cols[3].metric("Waiting", fmt(waiting))
    if not nodes:
        widgets.empty_fleet()
    for start in range(0, len(nodes), CARDS_PER_ROW):
        row = st.columns(CARDS_PER_ROW)
        for column, node in zip(row, nodes[start:start + CARDS_PER_ROW], strict=False):
            with column:
                node_card(node)
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("Queues")
        rows = queue_rows(pick(body, "queues", default={}))
        if rows:
            # A plain table: a handful of rows, and its cells stay readable text in the page.
            st.table(widgets.frame(rows).set_index("node:model"))
        else:
            st.caption("No node:model has served a request yet.")
    with right:
        events(view)


def events(view: data.LiveView) -> None:
    st.subheader("Latest events")
    if not view.events:
        st.caption("Nothing has happened yet. Node status changes, retries, context "
                   "protection, reaped zombies, pulls and model loads appear here as they "
                   "happen." if view.connected else "Waiting for the router's event stream.")
        return
    st.markdown("  \n".join(widgets.event_line(e) for e in view.events[:FEED_ROWS]))
    st.caption("Newest first; times in UTC.")


st.title("Fleet Overview")
live()
