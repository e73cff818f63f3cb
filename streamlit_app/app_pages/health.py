"""Health: the fleet's score, its vitals, and each finding by severity with its fix.

It follows the router's live stream: node counts come from its latest snapshot, and the
findings are read again as soon as the stream reports a change (a node going offline, a
retry, a model loading), besides every HEALTH_PERIOD.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import fmt, pick

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


def finding(item: Any) -> None:
    severity = pick(item, "severity", default="info")
    title = pick(item, "title", "check_id", default="finding")
    node = pick(item, "node_id")
    label = f"{widgets.severity_icon(severity)} {title}" + (f" — {node}" if node else "")
    with st.expander(label, expanded=severity == "critical"):
        st.write(pick(item, "description", default=data.EMPTY))
        fix = pick(item, "fix")
        if fix:
            st.markdown(f"**Fix:** {fix}")
        extra = pick(item, "data")
        if extra:
            st.json(extra, expanded=False)
        st.caption(f"check: {fmt(pick(item, 'check_id'))} · severity: {severity}")


@st.fragment(run_every=data.LIVE_EVERY)
def live() -> None:
    view = data.live()
    reply = data.health(epoch=f"{view.version}:{int(time.time() // HEALTH_PERIOD)}")
    if widgets.problem(reply, "fleet health"):
        return
    vitals = dict(pick(reply.data, "vitals", default={}))
    fleet = pick(view.fleet, "fleet", default={}) if view.connected else {}
    vitals.update({k: fleet[k] for k in LIVE_COUNTS if k in fleet})
    score = pick(vitals, "health_score")
    st.metric("Health score", fmt(score, "/ 100"))
    if isinstance(score, int | float):
        st.progress(min(max(score / 100, 0.0), 1.0))
    cols = st.columns(4)
    for index, (label, key, unit) in enumerate(VITALS):
        cols[index % 4].metric(label, fmt(pick(vitals, key), unit))
    findings = widgets.records(pick(reply.data, "recommendations", "findings", default=[]))
    if not findings:
        st.success("No findings: every health check passed.")
    for severity in SEVERITIES:
        group = [f for f in findings if str(f.get("severity", "info")).lower() == severity]
        if group:
            st.subheader(f"{widgets.severity_icon(severity)} {severity.title()} ({len(group)})")
            for item in group:
                finding(item)
    others = [f for f in findings if str(f.get("severity", "info")).lower() not in SEVERITIES]
    for item in others:
        finding(item)
    st.caption(f"checked {widgets.ago(pick(reply.data, 'checked_at'))}")


st.title("Health")
live()
