"""Fleet Overview: one card per node (status, CPU, memory, loaded models), queues, in flight,
and the fleet's events as they happen; drawn from the router's live stream."""

from __future__ import annotations

from typing import Any

import streamlit as st

from shared.schemas import FleetQueue, NodeView, QueueCounters
from streamlit_app import data, widgets
from streamlit_app import live as live_feed
from streamlit_app.data import fmt

CARDS_PER_ROW = 3
# The memory meter takes the colour of the node's own pressure level (herd-node's sampler).
PRESSURE_COLOURS: dict[str, widgets.Colour] = {"normal": "blue", "warning": "orange",
                                               "critical": "red"}
FEED_ROWS = 15


def node_card(node: NodeView) -> None:
    name = node.node_id
    status = str(node.status)
    with st.container(border=True):
        st.markdown(f"#### {widgets.status_icon(status)} {name}")
        st.caption(f"{status} · last heartbeat {widgets.ago(node.last_seen)}")
        # Meters, not metrics: two big numbers side by side were cut to "23.6 …" in a card
        # a third of a 1280 px page wide.
        cpu = node.cpu.utilization_pct
        widgets.meter("CPU", cpu / 100, "blue", fmt(cpu, "%"))
        total = node.memory.total_gb
        used = node.memory.used_gb
        pressure = node.memory.pressure
        widgets.meter("Memory", used / total if total > 0 else 0.0,
                      PRESSURE_COLOURS.get(pressure, "blue"),
                      f"{fmt(used)} of {fmt(total, 'GB')}")
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


def app_rows(by_app: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """/fleet/queue's waiting_by_app (model -> app -> waiting) as table rows."""
    return [{"model": model, "app": app, "waiting": n}
            for model, apps in sorted(by_app.items()) for app, n in sorted(apps.items())]


def live_caption(view: live_feed.LiveView) -> None:
    if view.connected:
        st.caption(f":green[:material/sensors:] Live: updated {widgets.ago(view.received_at)}"
                   " from the router's event stream")
    else:
        st.caption(f":orange[:material/sensors_off:] Live updates paused "
                   f"({view.error or 'connecting'}); showing a plain read, retrying")


@st.fragment(run_every=live_feed.LIVE_EVERY)
def live() -> None:
    # From the stream's latest snapshot: no request to the router per refresh.
    reply, view = live_feed.live_fleet()
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
    left, right = st.columns([5, 4], gap="medium")
    with left:
        st.subheader("Queues")
        rows = queue_rows(body.queues)
        if rows:
            # A plain table: a handful of rows, and its cells stay readable text in the page.
            st.table(widgets.frame(rows).set_index("node:model"))
        else:
            st.caption("No node:model has served a request yet.")
        if fleet.requests_waiting:  # only then ask for the per-app view: else the stream
            waiting_by_app(data.fleet_queue())
    with right:
        events(view)


def waiting_by_app(queue: data.Reply[FleetQueue]) -> None:
    rows = app_rows(queue.data.waiting_by_app) if queue.ok and queue.data is not None else []
    if rows:
        st.subheader("Waiting per app")
        st.caption("The fleet-wide queue serves waiting apps in weighted fair order "
                   "(app_weights); within an app, first come, first served.")
        st.table(widgets.frame(rows).set_index(["model", "app"]))


def events(view: live_feed.LiveView) -> None:
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
