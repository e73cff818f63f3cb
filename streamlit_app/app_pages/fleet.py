"""Fleet Overview: one card per node (status, CPU, memory, loaded models), queues, in flight."""

from __future__ import annotations

from typing import Any

import streamlit as st

from shared.schemas import NodeView, QueueCounters
from streamlit_app import data, widgets
from streamlit_app.data import fmt

CARDS_PER_ROW = 3


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


@st.fragment(run_every="2s")
def live() -> None:
    reply = data.fleet_status()
    body = reply.data
    if widgets.problem(reply, "the fleet status") or body is None:
        return
    fleet = body.fleet
    nodes = body.nodes
    cols = st.columns(4)
    cols[0].metric("Nodes online", f"{fmt(fleet.nodes_online)} / "
                                   f"{fmt(fleet.nodes_total)}")
    cols[1].metric("Models loaded", fmt(fleet.models_loaded))
    cols[2].metric("Requests in flight", fmt(fleet.requests_active))
    waiting = sum(q.pending for q in body.queues.values())
    cols[3].metric("Waiting", fmt(waiting))
    if not nodes:
        widgets.empty_fleet()
        return
    for start in range(0, len(nodes), CARDS_PER_ROW):
        row = st.columns(CARDS_PER_ROW)
        for column, node in zip(row, nodes[start:start + CARDS_PER_ROW], strict=False):
            with column:
                node_card(node)
    st.subheader("Queues")
    rows = queue_rows(body.queues)
    if rows:
        # A plain table: a handful of rows, and its cells stay readable text in the page.
        st.table(widgets.frame(rows).set_index("node:model"))
    else:
        st.caption("No node:model has served a request yet.")


st.title("Fleet Overview")
live()
