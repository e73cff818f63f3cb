"""Health: the fleet's score, its vitals, and each finding by severity with its fix.

It follows the router's live stream: node counts come from its latest snapshot, and the
findings are read again as soon as the stream reports a change (a node going offline, a
retry, a model loading), besides every HEALTH_PERIOD.
"""

from __future__ import annotations

import time

import msgspec
import streamlit as st

from shared.schemas import Finding
from streamlit_app import data, widgets
from streamlit_app import live as live_feed
from streamlit_app.data import fmt

SEVERITIES = ("critical", "warning", "info")
HEALTH_PERIOD = 10  # seconds between reads of the findings when nothing happens
LIVE_COUNTS = ("nodes_online", "nodes_degraded", "nodes_offline")
VITALS = (
    ("Nodes online", "nodes_online", ""),
    ("Degraded", "nodes_degraded", ""),
    ("Offline", "nodes_offline", ""),
    ("Error rate", "overall_error_rate_pct", "%"),
    ("Requests 24 h", "total_requests_24h", ""),
    ("Retries 24 h", "total_retries_24h", ""),
    ("Cold loads 24 h", "cold_loads_24h", ""),
    ("Avg TTFT", "avg_ttft_ms", "ms"),
)


def finding(item: Finding) -> None:
    severity = str(item.severity)
    title = item.title or item.check_id
    node = item.node_id
    label = f"{widgets.severity_icon(severity)} {title}" + (f" — {node}" if node else "")
    with st.expander(label, expanded=severity == "critical"):
        st.write(item.description or data.EMPTY)
        fix = item.fix
        if fix:
            st.markdown(f"**Fix:** {fix}")
        extra = item.data
        if extra:
            st.json(extra, expanded=False)
        st.caption(f"check: {fmt(item.check_id)} · severity: {severity}")


def score_tile(score: int) -> None:
    """The score, its band's word and a meter, all in the band's colour."""
    band = widgets.health_band(score)
    bands = ", ".join(f"{b.word} from {b.lowest}" for b in widgets.HEALTH_BANDS)
    st.metric("Health score", fmt(score, "/ 100"), delta=band.word, delta_color=band.colour,
              delta_arrow="off", help=f"100, less 20 per critical finding, 10 per warning and "
                                      f"3 per info; {bands}.")
    widgets.meter("Health score", score / 100, band.colour)


@st.fragment(run_every=live_feed.LIVE_EVERY)
def live() -> None:
    view = live_feed.live()
    reply = data.health(epoch=f"{view.version}:{int(time.time() // HEALTH_PERIOD)}")
    if widgets.problem(reply, "fleet health") or reply.data is None:
        return
    vitals = reply.data.vitals
    if view.connected and view.fleet is not None:
        # node counts from the stream are newer than the report's
        live = view.fleet.fleet
        vitals = msgspec.structs.replace(vitals, **{k: getattr(live, k) for k in LIVE_COUNTS})
    score_tile(vitals.health_score)
    cols = st.columns(4)
    for index, (label, key, unit) in enumerate(VITALS):
        cols[index % 4].metric(label, fmt(getattr(vitals, key), unit))
    findings = reply.data.recommendations
    if not findings:
        st.success("No findings: every health check passed.")
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if group:
            st.subheader(f"{widgets.severity_icon(severity)} {severity.title()} ({len(group)})")
            for item in group:
                finding(item)
    others = [f for f in findings if f.severity not in SEVERITIES]
    for item in others:
        finding(item)
    st.caption(f"checked {widgets.ago(reply.data.checked_at)}")


st.title("Health")
live()
