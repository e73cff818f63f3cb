"""Recommendations: what to keep, load or remove per node, with buttons that act on them."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import (
    ModelAdvice,
    ModelManagement,
    NodeModels,
    PullProgress,
    Recommendations,
)
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


# A node per row, and an installed model per row: a list of models in one cell was cut off.
NODES: widgets.Columns = {
    "node_id": st.column_config.TextColumn("Node"),
    "status": st.column_config.TextColumn("Status"),
    "servable": st.column_config.CheckboxColumn("Servable"),
    "memory_total_gb": widgets.number("Memory (GB)", "%.1f"),
    "memory_available_gb": widgets.number("Free memory (GB)", "%.1f"),
    "disk_available_gb": widgets.number("Free disk (GB)", "%.1f"),
    "installed": widgets.count("Installed", help="Models on the node's disk"),
    "loaded": widgets.count("Loaded", help="Models in the node's memory"),
}
KEEP = {"node_id": "Node", "model": "Model", "reason": "Why"}
INSTALLED: widgets.Columns = {
    "node_id": st.column_config.TextColumn("Node"),
    "model": st.column_config.TextColumn("Model"),
    "size_gb": widgets.number("Size (GB)", "%.1f"),
    "loaded": st.column_config.CheckboxColumn("Loaded"),
}


def node_rows(nodes: list[NodeModels]) -> list[dict[str, Any]]:
    return [{"node_id": n.node_id, "status": str(n.status), "servable": n.servable,
             "memory_total_gb": n.memory_total_gb, "memory_available_gb": n.memory_available_gb,
             "disk_available_gb": n.disk_available_gb, "installed": len(n.installed),
             "loaded": len(n.loaded)} for n in nodes]


def installed_rows(nodes: list[NodeModels]) -> list[dict[str, Any]]:
    return [{"node_id": n.node_id, "model": m.name, "size_gb": m.size_gb, "loaded": m.loaded}
            for n in nodes for m in n.installed]


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
            kept = widgets.frame(keep, tuple(KEEP))[list(KEEP)].rename(columns=KEEP)
            st.table(kept.set_index(KEEP["node_id"]))

st.header("Models on each node")
if not widgets.problem(management, "model management"):
    nodes = node_names(management.data)
    listed = management.data.nodes if management.data else []
    if listed:
        widgets.table(node_rows(listed), NODES)
        st.markdown("**Installed models**")
        models = installed_rows(listed)
        # A small fleet's whole list on the page; a large one's scrolls in its table.
        widgets.table(models, INSTALLED, height="content" if len(models) <= 20 else "auto")
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
