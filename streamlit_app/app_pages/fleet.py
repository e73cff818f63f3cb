"""Fleet Overview: one card per node (status, CPU, memory, loaded models), queues, in flight,
and the fleet's events as they happen; drawn from the router's live stream."""

from __future__ import annotations

from typing import Any

import streamlit as st

from shared.schemas import NodeView, QueueCounters
from streamlit_app import data, widgets
from streamlit_app.data import fmt

CARDS_PER_ROW = 3
FEED_ROWS = 15


def node_card(node: NodeView) -> None:
    name = node.node_id
    status = str(node.status)
    with st.container(border=True):
        st.markdown(f"#### {widgets.status_icon(status)} {name}")
        st.caption(f"{status} · last heartbeat {widgets.ago(node.last_seen)}")
        cpu = node.cpu.utilization_pct
        total = node.memory.total_gb
        used = node.memory.used_gb
        left, right = st.columns(2)
        left.metric("CPU", fmt(cpu, "%"))
        right.metric(f"Memory of {fmt(total, 'GB')}", fmt(used, "GB"))
        if total > 0:
            st.progress(min(max(used / total, 0.0), 1.0))
        pressure = node.memory.pressure
        if pressure and pressure != "normal":
            st.warning(f"memory pressure: {pressure}")
        models = node.models_loaded
        if not models:
            st.caption("no model loaded")
        for model in models:
            st.markdown(
                f"`{model.name}` · ctx {fmt(model.context_length)} · "
                f"{fmt(model.size_gb, 'GB')} · {fmt(model.requests_active)} active"
            )


def queue_rows(queues: dict[str, QueueCounters]) -> list[dict[str, Any]]:
    rows = []
    for key, row in queues.items():
        rows.append({
            "node:model": key,
            "pending": row.pending,
            "in flight": f"{fmt(row.in_flight)} / {fmt(row.max_concurrent)}",
            "done": row.done,
            "failed": row.failed,
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
    body = reply.data
    if widgets.problem(reply, "the fleet status") or body is None:
        return
    fleet = body.fleet
    nodes = body.nodes
    live_caption(view)
    cols = st.columns(4)
    cols[0].metric("Nodes online", f"{fmt(fleet.nodes_online)} / "
                                   f"{fmt(fleet.nodes_total)}")
    cols[1].metric("Models loaded", fmt(fleet.models_loaded))
    cols[2].metric("Requests in flight", fmt(fleet.requests_active))
    cols[3].metric("Waiting", fmt(fleet.requests_waiting))
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
        rows = queue_rows(body.queues)
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
