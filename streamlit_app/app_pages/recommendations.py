"""Recommendations: what to keep, load or remove per node, with buttons that act on them."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import ModelAdvice, ModelManagement, PullProgress, Recommendations
from streamlit_app import data, widgets
from streamlit_app.data import fmt


def actions(body: Recommendations) -> list[tuple[str, ModelAdvice]]:
    """(node_id, advice) for every node's advice, in the router's order."""
    return [(node.node_id, advice) for node in body.nodes for advice in node.recommendations]


def show_pull(model: str, node_id: str) -> None:
    """Run a pull and draw its progress as the node reports it."""
    bar = st.progress(0.0, text=f"pulling {model} on {node_id}…")
    last = PullProgress()
    for line in data.pull_model(model, node_id):
        last = line
        if line.error is not None:
            bar.empty()
            st.error(f"Pull of {model} on {node_id} failed: {line.error}")
            return
        total, done = line.total, line.completed
        share = done / total if total and done is not None else None
        text = f"{model} on {node_id}: {line.status or ''}"
        bar.progress(min(max(share, 0.0), 1.0) if share is not None else 0.0, text=text)
    bar.progress(1.0, text=f"{model} on {node_id}: {last.status or 'done'}")
    st.success(f"Pulled {model} on {node_id}.")


def _same(a: str, b: str) -> bool:
    def full(name: str) -> str:
        return name if ":" in name else name + ":latest"
    return full(a) == full(b)


def act(node: str, advice: ModelAdvice, index: int, installed_here: list[str]) -> None:
    action, model = advice.action, advice.model
    key = f"{index}:{node}:{model}:{action}"
    if not model:
        return
    if action == "load":
        left, right = st.columns(2)
        if left.button("Load", key="load:" + key, help="Load it now with an empty request"):
            reply = data.load_model(model, node)
            where = reply.extra.get("node") or node or "the fleet"
            (st.success if reply.ok else st.error)(
                f"Loaded {model} on {where}." if reply.ok else f"Load failed: {reply.error}")
        missing = not any(_same(model, name) for name in installed_here)
        if node and missing and right.button("Pull", key="pull:" + key,
                                             help="Download it onto this node"):
            show_pull(model, node)
    elif action == "remove" and node and st.button("Delete", key="delete:" + key):
        reply = data.delete_model(model, node)
        (st.success if reply.ok else st.error)(
            f"Deleted {model} from {node}." if reply.ok else f"Delete failed: {reply.error}")


def node_names(management: ModelManagement | None) -> list[str]:
    return [node.node_id for node in management.nodes] if management else []


def installed(management: ModelManagement | None, node_id: str) -> list[str]:
    for node in management.nodes if management else []:
        if node.node_id == node_id:
            return [m.name for m in node.installed]
    return []


st.title("Recommendations")
if st.button("Refresh"):
    data.refresh()
reply = data.recommendations()
management = data.model_management()
if not widgets.problem(reply, "recommendations") and reply.data is not None:
    rows = actions(reply.data)
    todo = [(node, advice) for node, advice in rows if advice.action != "keep"]
    keep = [{"node_id": node, **msgspec.to_builtins(advice)}
            for node, advice in rows if advice.action == "keep"]
    if not todo:
        st.success("Nothing to change: every node holds what its demand calls for.")
    for index, (node_id, advice) in enumerate(todo):
        with st.container(border=True):
            st.markdown(f"**{advice.action}** `{fmt(advice.model)}` on **{fmt(node_id)}**")
            st.caption(fmt(advice.reason))
            act(node_id, advice, index, installed(management.data, node_id))
    if keep:
        with st.expander(f"Keep loaded as they are ({len(keep)})"):
            st.table(widgets.frame(keep, ("node_id", "model", "reason")).set_index("node_id"))

st.header("Models on each node")
if not widgets.problem(management, "model management"):
    nodes = node_names(management.data)
    table: list[dict[str, Any]] = [msgspec.to_builtins(node) for node in
                                   (management.data.nodes if management.data else [])]
    if table:
        st.dataframe(widgets.frame(table, ("node_id",)), hide_index=True, width="stretch")
    if not nodes:
        widgets.empty_fleet()
    else:
        with st.form("pull_form"):
            st.markdown("**Pull a model onto a node**")
            pull_node = st.selectbox("Node", nodes, key="pull_node")
            pull_name = st.text_input("Model", placeholder="llama3.2:3b", key="pull_name")
            pull_go = st.form_submit_button("Pull", key="pull_go")
        if pull_go and pull_name.strip():
            show_pull(pull_name.strip(), str(pull_node))
        st.markdown("**Delete a model from a node**")
        del_node = st.selectbox("Node", nodes, key="delete_node")
        del_model = st.selectbox("Model", installed(management.data, str(del_node)),
                                 key="delete_model")
        if st.button("Delete", key="delete_go") and del_model:
            deleted = data.delete_model(str(del_model), str(del_node))
            (st.success if deleted.ok else st.error)(
                f"Deleted {del_model} from {del_node}." if deleted.ok
                else f"Delete failed: {deleted.error}")
