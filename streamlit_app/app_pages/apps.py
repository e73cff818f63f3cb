"""Apps: requests, tokens, errors and latency per tag (X-Herd-Tags, metadata.tags, user)."""

from __future__ import annotations

import msgspec
import streamlit as st

from streamlit_app import data, widgets

COLUMNS = ("tag", "requests", "prompt_tokens", "completion_tokens", "errors", "rejected",
           "unauthorized", "forbidden", "rate_limited", "avg_latency_ms", "p50_latency_ms",
           "p95_latency_ms")


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
    df = widgets.frame(rows, COLUMNS)
    name = "tag" if "tag" in df.columns else df.columns[0]
    if "requests" in df.columns:
        st.bar_chart(df.set_index(name)["requests"])
    st.dataframe(df, hide_index=True, width="stretch")


st.title("Apps")
st.caption("Usage per tag across the fleet. A client key's app is its requests' first tag. "
           "rejected counts the requests turned away, among them those refused at the door: "
           "unauthorized (401, no valid key: under (none)), forbidden (403) and rate_limited "
           "(429, the key's app over its limit).")
live()
