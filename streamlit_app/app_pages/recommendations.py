"""Recommendations: what to keep, load or remove per node, with buttons that act on them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import fmt, pick

LOAD_ACTIONS = {"load", "pull", "add", "preload", "warm"}
REMOVE_ACTIONS = {"remove", "delete", "unload", "evict"}
ACTION_LISTS = ("keep", "load", "pull", "remove", "delete", "unload")


def actions(body: Any) -> list[dict[str, Any]]:
    """Flatten either shape: a list of {node_id, model, action, reason}, or per-node lists."""
    found = pick(body, "recommendations", "actions", "nodes", default=body)
    rows: list[dict[str, Any]] = []
    for item in widgets.records(found, key_name="node_id"):
        if "model" in item or "action" in item:
            rows.append(item)
            continue
        for entry in widgets.records(item.get("recommendations", []), key_name="model"):
            rows.append({"node_id": item.get("node_id"), **entry})
        for action in ACTION_LISTS:
            for entry in widgets.records(item.get(action, []), key_name="model"):
                rows.append({"node_id": item.get("node_id"), "action": action, **entry})
    return rows


def show_pull(model: str, node_id: str) -> None:
    """Run a pull and draw its progress as the node reports it."""
    bar = st.progress(0.0, text=f"pulling {model} on {node_id}…")
    last: dict[str, Any] = {}
    for line in data.pull_model(model, node_id):
        last = line
        if "error" in line:
            bar.empty()
            st.error(f"Pull of {model} on {node_id} failed: {line['error']}")
            return
        total, done = line.get("total"), line.get("completed")
        share = done / total if isinstance(total, int | float) and total and \
            isinstance(done, int | float) else None
        text = f"{model} on {node_id}: {line.get('status', '')}"
        bar.progress(min(max(share, 0.0), 1.0) if share is not None else 0.0, text=text)
    bar.progress(1.0, text=f"{model} on {node_id}: {last.get('status', 'done')}")
    st.success(f"Pulled {model} on {node_id}.")


def _same(a: str, b: str) -> bool:
    def full(name: str) -> str:
        return name if ":" in name else name + ":latest"
    return full(a) == full(b)


def act(row: dict[str, Any], index: int, installed_here: list[str]) -> None:
    action = str(row.get("action", "")).lower()
    model = str(pick(row, "model", "name", default=""))
    node = str(row.get("node_id") or "")
    key = f"{index}:{node}:{model}:{action}"
    if not model:
        return
    if action in LOAD_ACTIONS:
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
    elif action in REMOVE_ACTIONS and node and st.button("Delete", key="delete:" + key):
        reply = data.delete_model(model, node)
        (st.success if reply.ok else st.error)(
            f"Deleted {model} from {node}." if reply.ok else f"Delete failed: {reply.error}")


def node_names(management: Any) -> list[str]:
    rows = widgets.find_records(management, ("nodes",), key_name="node_id")
    return [str(pick(r, "node_id", "id", default="?")) for r in rows]


def installed(management: Any, node_id: str) -> list[str]:
    for row in widgets.find_records(management, ("nodes",), key_name="node_id"):
        if str(pick(row, "node_id", "id")) == node_id:
            models = pick(row, "installed", "models_available", "models", default=[])
            return [str(pick(m, "name", "model", default="?"))
                    for m in widgets.records(models)]
    return []


st.title("Recommendations")
if st.button("Refresh"):
    data.refresh()
reply = data.recommendations()
management = data.model_management()
if not widgets.problem(reply, "recommendations"):
    rows = actions(reply.data)
    todo = [r for r in rows if str(r.get("action", "")).lower() != "keep"]
    keep = [r for r in rows if str(r.get("action", "")).lower() == "keep"]
    if not todo:
        st.success("Nothing to change: every node holds what its demand calls for.")
    for index, row in enumerate(todo):
        action = str(row.get("action", "")).lower()
        with st.container(border=True):
            st.markdown(f"**{action or 'note'}** `{fmt(pick(row, 'model', 'name'))}` on "
                        f"**{fmt(row.get('node_id'))}**")
            st.caption(fmt(pick(row, "reason", "description", "why")))
            act(row, index, installed(management.data, str(row.get("node_id") or "")))
    if keep:
        with st.expander(f"Keep loaded as they are ({len(keep)})"):
            st.table(widgets.frame(keep, ("node_id", "model", "reason")).set_index("node_id"))

st.header("Models on each node")
if not widgets.problem(management, "model management"):
    nodes = node_names(management.data)
    rows = widgets.find_records(management.data, ("nodes",), key_name="node_id")
    if rows:
        st.dataframe(widgets.frame(rows, ("node_id",)), hide_index=True, width="stretch")
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
            done = data.delete_model(str(del_model), str(del_node))
            (st.success if done.ok else st.error)(
                f"Deleted {del_model} from {del_node}." if done.ok
                else f"Delete failed: {done.error}")
