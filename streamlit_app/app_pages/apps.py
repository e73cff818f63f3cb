"""Apps: requests, tokens, errors and latency per tag (X-Herd-Tags, metadata.tags, user)."""

from __future__ import annotations

import msgspec
import streamlit as st

from streamlit_app import data, widgets

# The table's columns with their headers and units; the other fields stay in the data.
COLUMNS: widgets.Columns = {
    "tag": st.column_config.TextColumn("App (tag)"),
    "requests": widgets.count("Requests", help="In the last 24 h"),
    "errors": widgets.count("Errors"),
    "prompt_tokens": widgets.count("Tokens in", help="Prompt tokens"),
    "completion_tokens": widgets.count("Tokens out", help="Generated tokens"),
    "rejected": widgets.count("Rejected", help="Turned away, the refusals below included"),
    "unauthorized": widgets.count("401", help="Refused: no valid key (under (none))"),
    "forbidden": widgets.count("403", help="Refused: forbidden"),
    "rate_limited": widgets.count("429", help="Refused: the key's app over its limit"),
    "p50_latency_ms": widgets.ms("p50", help="Median latency"),
    "p95_latency_ms": widgets.ms("p95", help="95th percentile of the latency"),
}


@st.fragment(run_every="5s")
def live() -> None:
    reply = data.apps()
    if widgets.problem(reply, "usage per app") or reply.data is None:
        return
    rows = [{"tag": tag, **msgspec.to_builtins(summary)}
            for tag, summary in reply.data.apps.items()]
    if not rows:
        st.info("No tagged requests yet. Tag a request with the `X-Herd-Tags: my-app` header, "
                "`metadata.tags` in the body, or the OpenAI `user` field.")
        return
    df = widgets.frame(rows, tuple(COLUMNS))
    name = "tag" if "tag" in df.columns else df.columns[0]
    if "requests" in df.columns:
        st.bar_chart(df.set_index(name)["requests"])
    widgets.table(df, COLUMNS)


st.title("Apps")
st.caption("Usage per tag across the fleet. A client key's app is its requests' first tag. "
           "Rejected counts the requests turned away, among them those refused at the door: "
           "401 (no valid key: under (none)), 403 (forbidden) and 429 (the key's app over its "
           "limit).")
live()
